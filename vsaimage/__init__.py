"""vsaimage: turn a dd'd LeftHand / StoreVirtual VSA system disk into a Xen PV domU disk."""

__version__ = "0.1.0"
