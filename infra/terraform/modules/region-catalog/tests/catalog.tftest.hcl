# `terraform test` cases of the region catalog: what it renders, and what it refuses.

variables {
  control_url = "dns+srv://_meridian-control._tcp.example.com"
  regions = [
    { name = "eu-west", lat = 53.35, lon = -6.26, capacity = 400, public_url = "https://eu-west.edge.example.com/", cloud_region = "eu-west-1" },
    { name = "us-east", lat = 38.9, lon = -77.0, capacity = 600, public_url = "https://us-east.edge.example.com", datacenter = "use1", node_capacity = 150 },
  ]
  edge_tokens = { "eu-west" = "edge-token-eu-west-0123456789" }
}

run "renders_edge_settings_per_region" {
  command = apply

  assert {
    condition     = output.edge_settings["eu-west"].MERIDIAN_EDGE_PUBLIC_URL == "https://eu-west.edge.example.com"
    error_message = "the public URL loses its trailing slash"
  }
  assert {
    condition     = output.edge_settings["us-east"].MERIDIAN_EDGE_CAPACITY == "150" && output.edge_settings["eu-west"].MERIDIAN_EDGE_CAPACITY == "100"
    error_message = "node capacity is taken from the catalog, 100 by default"
  }
  assert {
    condition     = output.edge_settings["us-east"].MERIDIAN_CONTROL_URL == var.control_url
    error_message = "every edge gets the control URL"
  }
  assert {
    condition     = output.datacenters == { "eu-west" = "eu-west", "us-east" = "use1" }
    error_message = "the datacenter defaults to the region name"
  }
}

run "renders_nomad_variables_with_tokens_only_where_given" {
  command = apply

  assert {
    condition     = nonsensitive(output.nomad_variables["meridian/regions/eu-west"].edge_token) == "edge-token-eu-west-0123456789"
    error_message = "the region's edge token is in its Nomad variable"
  }
  assert {
    condition     = !contains(keys(nonsensitive(output.nomad_variables["meridian/regions/us-east"])), "edge_token")
    error_message = "a region without a token gets no edge_token item"
  }
  assert {
    condition     = nonsensitive(output.nomad_variables["meridian/regions/us-east"].lat) == "38.9"
    error_message = "coordinates are rendered"
  }
  assert {
    condition     = length(nonsensitive(output.nomad_variables)) == 2
    error_message = "one variable per region"
  }
}

run "renders_region_registration_bodies" {
  command = apply

  assert {
    condition     = output.region_bodies["us-east"] == { lat = 38.9, lon = -77.0, edge_url = "https://us-east.edge.example.com", capacity = 600 }
    error_message = "the PUT /v1/regions body is lat, lon, edge_url, capacity"
  }
}

run "refuses_a_latitude_out_of_range" {
  command = plan
  variables {
    regions = [
      { name = "eu-west", lat = 53.35, lon = -6.26, capacity = 400, public_url = "https://eu-west.example.com" },
      { name = "nowhere", lat = 91, lon = 0, capacity = 10, public_url = "https://nowhere.example.com" },
    ]
  }
  expect_failures = [var.regions]
}

run "refuses_a_longitude_out_of_range" {
  command = plan
  variables {
    regions = [{ name = "far-east", lat = 0, lon = 180.5, capacity = 10, public_url = "https://far.example.com" }]
  }
  expect_failures = [var.regions]
}

run "refuses_a_bad_name" {
  command = plan
  variables {
    regions = [{ name = "EU West", lat = 0, lon = 0, capacity = 10, public_url = "https://x.example.com" }]
  }
  expect_failures = [var.regions]
}

run "refuses_a_repeated_name" {
  command = plan
  variables {
    regions = [
      { name = "eu-west", lat = 53.35, lon = -6.26, capacity = 400, public_url = "https://a.example.com" },
      { name = "eu-west", lat = 50, lon = 8, capacity = 400, public_url = "https://b.example.com" },
    ]
  }
  expect_failures = [var.regions]
}

run "refuses_zero_or_fractional_capacity" {
  command = plan
  variables {
    regions = [
      { name = "empty", lat = 0, lon = 0, capacity = 0, public_url = "https://a.example.com" },
      { name = "half", lat = 0, lon = 0, capacity = 2.5, public_url = "https://b.example.com" },
    ]
  }
  expect_failures = [var.regions]
}

run "refuses_an_empty_catalog" {
  command = plan
  variables {
    regions = []
  }
  expect_failures = [var.regions]
}

run "refuses_a_public_url_that_is_not_http" {
  command = plan
  variables {
    regions = [{ name = "eu-west", lat = 0, lon = 0, capacity = 1, public_url = "ftp://eu.example.com" }]
  }
  expect_failures = [var.regions]
}

run "refuses_a_control_url_of_another_scheme" {
  command = plan
  variables {
    control_url = "dns://control.example.com"
  }
  expect_failures = [var.control_url]
}
