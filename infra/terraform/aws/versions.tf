terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

# Global Accelerator's API lives in us-west-2, whatever regions it fronts.
provider "aws" {
  region = "us-west-2"
}

# Terraform cannot loop over provider configurations, so each AWS region Meridian may use has
# its own provider here and its own module block in regions.tf. To add one: a provider, a
# module block, and its name in local.region_modules.
provider "aws" {
  alias  = "eu_west"
  region = "eu-west-1"
}

provider "aws" {
  alias  = "us_east"
  region = "us-east-1"
}

provider "aws" {
  alias  = "ap_northeast"
  region = "ap-northeast-1"
}
