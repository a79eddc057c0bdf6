"""wmrobot: latent (JEPA) world models for MuJoCo robots: collect, train, plan, benchmark."""

__version__ = "0.1.0"
