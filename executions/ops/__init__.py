"""What operators watch and keep tidy: metrics, health, log context, retention."""
