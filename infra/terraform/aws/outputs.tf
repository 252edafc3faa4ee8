output "anycast_addresses" {
  description = "The accelerator's two static anycast IPv4 addresses (point the edges' DNS name at them)."
  value       = aws_globalaccelerator_accelerator.edges.ip_sets[0].ip_addresses
}

output "accelerator_dns_name" {
  value = aws_globalaccelerator_accelerator.edges.dns_name
}

output "nomad_variables" {
  description = "Nomad variables to write (nomad var put PATH …), by path; from the catalog."
  value       = module.catalog.nomad_variables
  sensitive   = true
}

output "region_bodies" {
  description = "Bodies of PUT /v1/regions/{name} for the control plane, by region."
  value       = module.catalog.region_bodies
}

output "region_load_balancers" {
  description = "Per region, the DNS name its public_url should be a CNAME of."
  value       = { for name, m in local.region_modules : name => m.lb_dns_name }
}
