# Provider-free on purpose: this module only validates and renders, so it runs (and is tested
# with `terraform test`) anywhere, without credentials or provider downloads.
terraform {
  required_version = ">= 1.9"
}
