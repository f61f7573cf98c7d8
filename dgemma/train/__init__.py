"""Training: data, corruption and loss, the trainer loop, checkpoints and export. Uses model and sampling."""
