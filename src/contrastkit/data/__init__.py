"""Data for contrastive learning, one subpackage per modality (`contrastkit.data.image`, ...)."""
