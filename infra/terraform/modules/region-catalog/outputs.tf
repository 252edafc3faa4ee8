output "regions" {
  description = "The validated catalog by name, with defaults filled in (datacenter, node_capacity)."
  value       = local.regions
}

output "edge_settings" {
  description = "Per region, the settings its edges start with (environment variable names of `meridian edge serve`)."
  value       = local.edge_settings
}

output "nomad_variables" {
  description = "Nomad variables to write, by path: the items nomad/edge.nomad.hcl reads. Sensitive: they hold edge tokens."
  value       = local.nomad_variables
  sensitive   = true
}

output "region_bodies" {
  description = "Per region, the body of `PUT /v1/regions/{name}` that registers it with the control plane."
  value = {
    for name, r in local.regions : name => {
      lat      = r.lat
      lon      = r.lon
      edge_url = r.public_url
      capacity = r.capacity
    }
  }
}

output "datacenters" {
  description = "Nomad datacenter per region name."
  value       = { for name, r in local.regions : name => r.datacenter }
}
