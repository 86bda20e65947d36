"""The model bundle: the torch-free contract between the parts (see docs/bundle.md).

``load``, ``save`` and the :class:`Bundle` live in :mod:`model.bundle.format`; the image and audio
input conventions, the encoder specs, merging and the gallery index are beside it. Nothing in this
package imports PyTorch.
"""
from model.bundle.format import (
    DISTANCES,
    ENCODER_PARTS,
    FORMAT,
    FORMAT_VERSION,
    Bundle,
    BundleError,
    content_hash,
    encoder_tensors,
    load,
    make_meta,
    save,
)

__all__ = ["DISTANCES", "ENCODER_PARTS", "FORMAT", "FORMAT_VERSION", "Bundle", "BundleError", "content_hash",
           "encoder_tensors", "load", "make_meta", "save"]
