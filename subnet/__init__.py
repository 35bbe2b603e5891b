"""Where leases come from: network config, the lease model, the subnet managers and subnet.env."""
