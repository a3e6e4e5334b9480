"""Training one job or a stacked group of jobs: the LightningModule, its data, records and bookkeeping."""
