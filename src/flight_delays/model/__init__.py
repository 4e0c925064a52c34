"""The model's pure cores: per-day features, past-day delay statistics, the one scoring
module, evaluation, the promotion rule and the served predictions' tables."""
