"""Running xennet on a real Xen host: the driver domain's and the guest's programs."""
