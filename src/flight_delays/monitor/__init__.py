"""What people watch: input drift (PSI), alerts and their record, the run's HTML report."""
