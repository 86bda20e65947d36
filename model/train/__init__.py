"""Training: audiovisual pretraining, image-only baselines, scene classification and land-cover
segmentation, and the one Lightning Trainer builder they share."""
