variable "region" {
  description = "One entry of the region catalog (module.catalog.regions[name])."
  type = object({
    name          = string
    datacenter    = string
    node_capacity = number
  })
}

variable "vpc_cidr" {
  description = "CIDR block of the region's VPC (one /16 per region keeps peering possible later)."
  type        = string
}

variable "edge_port" {
  description = "Static port of the edges (nomad/edge.nomad.hcl, var.port)."
  type        = number
}

variable "ami_id" {
  description = "AMI of the Nomad clients: Nomad and Meridian installed (see docs/operations-deploy.md)."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the Nomad clients."
  type        = string
}

variable "clients" {
  description = "Size of the region's Nomad client group: min, desired, max."
  type        = object({ min = number, desired = number, max = number })
}

variable "nomad_servers" {
  description = "Addresses of the Nomad servers the clients join (host:port)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate (in this region) for the TLS listener in front of the edges."
  type        = string
}

variable "edge_version" {
  description = "meridian_edge_version node metadata new clients start with (nomad/edge.nomad.hcl)."
  type        = string
}

variable "admin_cidrs" {
  description = "CIDR blocks allowed to reach the Nomad client API (4646) for operations."
  type        = list(string)
  default     = []
}
