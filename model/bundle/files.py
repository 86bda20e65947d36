"""The names of the files in a bundle folder: one constant per file, used wherever a name is needed.

=========================  ===========================================  ============================
constant                   file                                         written by
=========================  ===========================================  ============================
``META_FILE``              ``bundle.json``: format, encoder specs,      ``model.bundle.format.save``
                           embedding size, distance, input, heads,
                           provenance (required)
``WEIGHTS_FILE``           ``weights.safetensors``: every tensor,       ``model.bundle.format.save``
                           named by part (required)
``GALLERY_FILE``           ``gallery.parquet``: the audio gallery       ``python -m model.gallery``
                           (optional; :mod:`model.bundle.gallery`)
``ONNX_MANIFEST``          ``onnx.json``: the exported ONNX files,      ``python -m export.onnx``
                           their hashes and checks (optional)
``TRT_MANIFEST``           ``trt.json``: the TensorRT engines, their    ``python -m export.trt``
                           hashes and checks (optional)
``ONNX_SUFFIX``            ``{graph}.onnx``, ``{graph}.fp16.onnx``,     ``python -m export.onnx``
                           ``{graph}.int8.onnx``: exported graphs       (``export.manifest.onnx_name``)
``TRT_SUFFIX``             ``{graph}.trt.ep``: torch-tensorrt engines   ``python -m export.trt``
                                                                        (``export.manifest.trt_name``)
=========================  ===========================================  ============================

``META_FILE`` and ``WEIGHTS_FILE`` make a folder a bundle (:data:`REQUIRED_FILES`); its content
hash is taken over them (``model.bundle.format.content_hash``).
"""
from __future__ import annotations

META_FILE = "bundle.json"
WEIGHTS_FILE = "weights.safetensors"
GALLERY_FILE = "gallery.parquet"
ONNX_MANIFEST = "onnx.json"
TRT_MANIFEST = "trt.json"
ONNX_SUFFIX = ".onnx"
TRT_SUFFIX = ".trt.ep"
REQUIRED_FILES = (META_FILE, WEIGHTS_FILE)
