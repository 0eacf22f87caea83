"""The serving simulation: step costs taken from the pricing model, the engine loop, and serving scenarios."""
