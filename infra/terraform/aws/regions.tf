# One module block per AWS region (see versions.tf); a catalog region is provisioned by the block
# whose AWS region its `cloud_region` names.

module "eu_west_1" {
  source        = "./region"
  for_each      = { for name, r in local.aws_regions : name => r if r.cloud_region == "eu-west-1" }
  providers     = { aws = aws.eu_west }
  region        = each.value
  vpc_cidr      = local.vpc_cidrs[each.key]
  edge_port     = var.edge_port
  edge_version  = var.edge_version
  ami_id        = var.ami_ids[each.key]
  instance_type = var.instance_type
  clients       = var.clients
  nomad_servers = var.nomad_servers
  admin_cidrs   = var.admin_cidrs

  certificate_arn = var.certificate_arns[each.key]
}

module "us_east_1" {
  source        = "./region"
  for_each      = { for name, r in local.aws_regions : name => r if r.cloud_region == "us-east-1" }
  providers     = { aws = aws.us_east }
  region        = each.value
  vpc_cidr      = local.vpc_cidrs[each.key]
  edge_port     = var.edge_port
  edge_version  = var.edge_version
  ami_id        = var.ami_ids[each.key]
  instance_type = var.instance_type
  clients       = var.clients
  nomad_servers = var.nomad_servers
  admin_cidrs   = var.admin_cidrs

  certificate_arn = var.certificate_arns[each.key]
}

module "ap_northeast_1" {
  source        = "./region"
  for_each      = { for name, r in local.aws_regions : name => r if r.cloud_region == "ap-northeast-1" }
  providers     = { aws = aws.ap_northeast }
  region        = each.value
  vpc_cidr      = local.vpc_cidrs[each.key]
  edge_port     = var.edge_port
  edge_version  = var.edge_version
  ami_id        = var.ami_ids[each.key]
  instance_type = var.instance_type
  clients       = var.clients
  nomad_servers = var.nomad_servers
  admin_cidrs   = var.admin_cidrs

  certificate_arn = var.certificate_arns[each.key]
}

locals {
  # Meridian region name → its load balancer and AWS region, whichever block made it.
  region_modules = merge(module.eu_west_1, module.us_east_1, module.ap_northeast_1)
}
