locals {
  regions = {
    for r in var.regions : r.name => merge(r, {
      datacenter = coalesce(r.datacenter, r.name)
      public_url = trimsuffix(r.public_url, "/")
    })
  }

  # What `meridian edge serve` is started with in each region (flags and environment alike;
  # the Nomad job passes the region as a flag and the rest from the region's Nomad variable).
  edge_settings = {
    for name, r in local.regions : name => {
      MERIDIAN_EDGE_REGION     = name
      MERIDIAN_CONTROL_URL     = var.control_url
      MERIDIAN_EDGE_PUBLIC_URL = r.public_url
      MERIDIAN_EDGE_CAPACITY   = tostring(r.node_capacity)
    }
  }

  # Nomad variables (`nomad var put PATH k=v …`) read by nomad/edge.nomad.hcl.
  nomad_variables = {
    for name, r in local.regions : "meridian/regions/${name}" => merge(
      {
        region     = name
        datacenter = r.datacenter
        public_url = r.public_url
        capacity   = tostring(r.node_capacity)
        lat        = tostring(r.lat)
        lon        = tostring(r.lon)
      },
      contains(keys(var.edge_tokens), name) ? { edge_token = var.edge_tokens[name] } : {},
    )
  }
}
