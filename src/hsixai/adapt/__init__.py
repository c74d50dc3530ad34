"""Attention-guided semi-supervised adversarial domain adaptation (README, "Domain adaptation")."""
