variable "regions" {
  description = "The region catalog (see modules/region-catalog): the Meridian regions to provision."
  type        = any
}

variable "control_url" {
  description = "How edges reach the control plane: an http(s) URL or dns+srv://_meridian-control._tcp.<domain>."
  type        = string
}

variable "edge_tokens" {
  description = "Per region name, the edge-scoped API token of its edges."
  type        = map(string)
  default     = {}
  sensitive   = true
}

variable "edge_port" {
  description = "Static port of the edges on every Nomad client (nomad/edge.nomad.hcl, var.port)."
  type        = number
  default     = 8701
}

variable "edge_version" {
  description = "meridian_edge_version metadata of newly launched clients."
  type        = string
}

variable "ami_ids" {
  description = "Per region name, the AMI of its Nomad clients (Nomad and Meridian installed)."
  type        = map(string)
}

variable "certificate_arns" {
  description = "Per region name, the ACM certificate of its load balancer (in that AWS region)."
  type        = map(string)
}

variable "instance_type" {
  description = "EC2 instance type of the Nomad clients."
  type        = string
  default     = "c7i.large"
}

variable "clients" {
  description = "Size of each region's Nomad client group."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 2, max = 10 }
}

variable "nomad_servers" {
  description = "Addresses (host:port) of the Nomad servers every client joins."
  type        = list(string)
}

variable "admin_cidrs" {
  description = "CIDR blocks allowed to reach the Nomad client API."
  type        = list(string)
  default     = []
}
