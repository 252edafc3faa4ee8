variable "regions" {
  description = <<-EOT
    The regions Meridian serves. Each: `name` (as the control plane knows it, e.g. eu-west), `lat`
    and `lon` (degrees, used by placement), `capacity` (most live backends in the region, at least
    1), `public_url` (what users reach the region's edges at: the anycast name or a regional
    name), `datacenter` (the Nomad datacenter of its clients; default: the name), and optionally
    `cloud_region` (the provider's region its infrastructure lives in, e.g. eu-west-1) and
    `node_capacity` (most live backends on one edge node; default 100).
  EOT
  type = list(object({
    name          = string
    lat           = number
    lon           = number
    capacity      = number
    public_url    = string
    datacenter    = optional(string)
    cloud_region  = optional(string)
    node_capacity = optional(number, 100)
  }))

  validation {
    condition     = length(var.regions) > 0
    error_message = "The region catalog is empty: at least one region is needed."
  }

  # Each error names the regions at fault: a catalog of twenty regions is edited by hand.
  validation {
    condition     = alltrue([for r in var.regions : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", r.name))])
    error_message = "Region names must be lowercase letters, digits and dashes (at most 63), starting with a letter or digit: ${join(", ", [for r in var.regions : jsonencode(r.name) if !can(regex("^[a-z0-9][a-z0-9-]{0,62}$", r.name))])}."
  }

  validation {
    condition     = length(distinct([for r in var.regions : r.name])) == length(var.regions)
    error_message = "Region names must be unique; repeated: ${join(", ", distinct([for r in var.regions : r.name if length([for o in var.regions : o if o.name == r.name]) > 1]))}."
  }

  validation {
    condition     = alltrue([for r in var.regions : r.lat >= -90 && r.lat <= 90 && r.lon >= -180 && r.lon <= 180])
    error_message = "Coordinates out of range (lat in [-90, 90], lon in [-180, 180]) in region ${join(", ", [for r in var.regions : format("%s (lat %v, lon %v)", r.name, r.lat, r.lon) if !(r.lat >= -90 && r.lat <= 90 && r.lon >= -180 && r.lon <= 180)])}."
  }

  validation {
    condition     = alltrue([for r in var.regions : r.capacity >= 1 && r.capacity <= 1000000 && floor(r.capacity) == r.capacity])
    error_message = "Capacity must be a whole number from 1 to 1000000 in region ${join(", ", [for r in var.regions : format("%s (capacity %v)", r.name, r.capacity) if !(r.capacity >= 1 && r.capacity <= 1000000 && floor(r.capacity) == r.capacity)])}."
  }

  validation {
    condition     = alltrue([for r in var.regions : r.node_capacity >= 1 && floor(r.node_capacity) == r.node_capacity])
    error_message = "node_capacity must be a whole number of at least 1 in region ${join(", ", [for r in var.regions : r.name if !(r.node_capacity >= 1 && floor(r.node_capacity) == r.node_capacity)])}."
  }

  validation {
    condition     = alltrue([for r in var.regions : can(regex("^https?://[^\\s/?#]+(/[^\\s?#]*)?$", r.public_url))])
    error_message = "public_url must be an http(s) URL without query or fragment in region ${join(", ", [for r in var.regions : r.name if !can(regex("^https?://[^\\s/?#]+(/[^\\s?#]*)?$", r.public_url))])}."
  }
}

variable "control_url" {
  description = "How edges reach the control plane: an http(s) URL or dns+srv://_meridian-control._tcp.<domain>."
  type        = string

  validation {
    condition     = can(regex("^(https?://[^\\s/?#]+(/[^\\s?#]*)?|dns\\+srv://_[a-z0-9-]+\\._tcp\\.[a-z0-9.-]+)$", var.control_url))
    error_message = "control_url must be an http(s) URL or dns+srv://_service._tcp.domain."
  }
}

variable "edge_tokens" {
  description = "Per region name, the API token (edge scope) its edges use. Regions without one get no edge_token item."
  type        = map(string)
  default     = {}
  sensitive   = true
}
