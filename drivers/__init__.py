"""Device drivers: one small interface (``drivers.base.Driver``), one folder per protocol."""
