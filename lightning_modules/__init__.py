"""The causal LM, span-masked losses and the LightningModule that trains a role."""
