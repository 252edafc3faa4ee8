# The catalog validates the region list (a bad coordinate fails the plan, naming the region) and
# renders what every other part needs.
module "catalog" {
  source      = "../modules/region-catalog"
  regions     = var.regions
  control_url = var.control_url
  edge_tokens = var.edge_tokens
}

locals {
  regions = module.catalog.regions
  # One /16 per region, stable by the region's position in the sorted catalog.
  vpc_cidrs = { for i, name in sort(keys(local.regions)) : name => cidrsubnet("10.0.0.0/8", 8, i + 16) }
  # Regions of the catalog this root can provision, by Meridian name → AWS region.
  aws_regions = { for name, r in local.regions : name => r if r.cloud_region != null }
}
