"""Role views of trajectories, span-labelled token rows, packing and the LightningDataModule."""
