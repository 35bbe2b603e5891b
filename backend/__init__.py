"""How packets get there: the VXLAN backend and the netlink helpers that program the kernel."""
