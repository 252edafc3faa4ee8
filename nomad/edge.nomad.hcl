# Meridian edge nodes: one edge on every Nomad client of one region's datacenter.
#
# Run one copy of this job per region, e.g.
#   nomad job run -var region=eu-west -var datacenter=eu-west-1 -var edge_version=7 \
#                 -var artifact_dir=/opt/meridian/7 nomad/edge.nomad.hcl
#
# Needs, on every client of the datacenter:
#   - Meridian installed under `artifact_dir` (a virtualenv with `bin/meridian`), since the edge
#     runs backends as local processes next to itself (raw_exec: no container around the edge);
#   - the raw_exec driver enabled (`plugin "raw_exec" { config { enabled = true } }`);
#   - a host volume `meridian-edge` (`client { host_volume "meridian-edge" { path = "/var/lib/meridian" } }`)
#     for the replica cache, the node id, the offline journal and backend logs: they survive a
#     restart or an upgrade of the edge, so routes keep working while the control plane is away;
#   - `max_kill_timeout` in the client configuration at least as long as `kill_timeout` below
#     (Nomad's default of 30s would cut it short);
#   - node metadata `meridian_edge_version` naming the edge version the node should run
#     (`nomad node meta apply -node-id NODE meridian_edge_version=7`).
# And a Nomad variable `meridian/regions/<region>` (written by infra/terraform/modules/region-catalog)
# with the items `public_url`, `capacity` and `edge_token`, readable by this job through an ACL
# policy bound to its workload identity.
#
# Upgrading, node by node (as e2b-dev/infra rolls out its orchestrator):
#   1. register the new version under its own job id: Nomad cannot interpolate a job's label
#      (hashicorp/nomad#9522), so substitute it when submitting:
#        sed 's/^job "meridian-edge"/job "meridian-edge-8"/' nomad/edge.nomad.hcl |
#          nomad job run -var edge_version=8 -var … -
#      It places nothing yet: no node's `meridian_edge_version` says 8.
#   2. per node: `meridian edge drain NODE_ID`, wait until it reports empty, then
#      `nomad node meta apply -node-id NODE meridian_edge_version=8`: the old job's constraint no
#      longer holds there, so Nomad stops the old edge (SIGTERM, up to kill_timeout) and the new
#      job places the new edge on the same host volume, same node id, same replica.
#   3. when no node runs the old version, `nomad job stop -purge meridian-edge-7`.

variable "region" {
  type        = string
  description = "Meridian region name these edges serve (e.g. eu-west)."
}

variable "datacenter" {
  type        = string
  description = "Nomad datacenter of the region's clients."
}

variable "edge_version" {
  type        = string
  description = "Version of Meridian this job runs; nodes opt in with meta.meridian_edge_version."
}

variable "artifact_dir" {
  type        = string
  default     = "/opt/meridian/current"
  description = "Directory on each client holding the Meridian virtualenv of edge_version."
}

variable "control_url" {
  type        = string
  default     = "dns+srv://_meridian-control._tcp.service.consul."
  description = "Control plane: an http(s) URL, or dns+srv://NAME. to find it by SRV records."
}

variable "port" {
  type        = number
  default     = 8701
  description = "Static port of the edge on every client: what the anycast endpoint groups target."
}

job "meridian-edge" {
  type        = "system"
  datacenters = [var.datacenter]

  meta {
    meridian_region       = var.region
    meridian_edge_version = var.edge_version
  }

  # A node runs the edge of exactly one version: the one its metadata names. This is what lets two
  # versions of this job coexist, each on its own nodes, during a node-by-node upgrade.
  constraint {
    attribute = "${meta.meridian_edge_version}"
    value     = var.edge_version
  }

  # A new edge must not replace a healthy one on several nodes at once.
  update {
    max_parallel = 1
    stagger      = "1m"
  }

  group "edge" {
    # One edge per host: the static port and the host volume are the host's. (A system job places
    # one per node already; the constraint keeps it so if this ever becomes a service job.)
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "http" {
        static = var.port
      }
    }

    volume "data" {
      type      = "host"
      source    = "meridian-edge"
      read_only = false
    }

    service {
      name     = "meridian-edge"
      port     = "http"
      provider = "nomad"
      tags     = [var.region]

      check {
        type     = "http"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "edge" {
      # raw_exec: the edge starts backends as processes on the host (own process groups, rlimits,
      # a process-tree stop); inside a container they would be confined to the edge's.
      driver = "raw_exec"

      volume_mount {
        volume      = "data"
        destination = "/var/lib/meridian"
      }

      config {
        command = "${var.artifact_dir}/bin/meridian"
        args = [
          "edge", "serve",
          "--region", var.region,
          "--host", "0.0.0.0",
          "--port", "${NOMAD_PORT_http}",
          "--data-dir", "/var/lib/meridian/edge",
        ]
      }

      # Token, public URL and capacity from the region's Nomad variable; `meridian edge serve`
      # reads them from these environment variables.
      template {
        destination = "${NOMAD_SECRETS_DIR}/edge.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          MERIDIAN_CONTROL_URL=${var.control_url}
          MERIDIAN_EDGE_SHUTDOWN_DRAIN_S=840
          {{ with nomadVar "meridian/regions/${var.region}" }}
          MERIDIAN_EDGE_TOKEN={{ .edge_token }}
          MERIDIAN_EDGE_PUBLIC_URL={{ .public_url }}
          MERIDIAN_EDGE_CAPACITY={{ .capacity }}
          {{ end }}
        EOT
      }

      # Leave the service catalog (and so the accelerator's health check) before the signal.
      shutdown_delay = "10s"
      # On SIGTERM the edge drains itself (MERIDIAN_EDGE_SHUTDOWN_DRAIN_S above: 14 minutes): the
      # control plane places nothing more here, idle backends stop, open WebSockets may finish.
      # The kill timeout is longer, so Nomad does not SIGKILL it mid-drain.
      kill_signal  = "SIGTERM"
      kill_timeout = "15m"

      resources {
        cpu    = 2000
        memory = 1024
      }
    }
  }
}
