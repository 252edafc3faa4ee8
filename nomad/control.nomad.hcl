# Meridian control plane: stateless FastAPI processes in front of one PostgreSQL.
#
# Run:   nomad job run -var image=ghcr.io/example/meridian:1.4.0 nomad/control.nomad.hcl
# Needs: a Nomad variable at `nomad/jobs/meridian-control` with the items
#          database_url  postgresql://meridian:…@db.internal:5432/meridian
#          admin_token   the bootstrap admin token (16 characters or more)
#        e.g. `nomad var put nomad/jobs/meridian-control database_url=… admin_token=…`.
#        A job reads the variables under its own `nomad/jobs/<job id>` path without any ACL policy.
# Every instance runs the SQL migrations at start under an advisory lock, so a rolling update
# that adds a migration is safe: the first new instance migrates, the others wait for the lock.

variable "image" {
  type        = string
  description = "Container image of Meridian (the same image runs `meridian control serve`)."
}

variable "datacenters" {
  type        = list(string)
  default     = ["control"]
  description = "Nomad datacenters the control plane runs in (usually one, near PostgreSQL)."
}

variable "instances" {
  type        = number
  default     = 2
  description = "How many control-plane processes run; at least 2 so an update never leaves none."
}

variable "public_url" {
  type        = string
  description = "URL clients and edges reach the control plane at (the load balancer in front)."
}

job "meridian-control" {
  type        = "service"
  datacenters = var.datacenters

  # One canary first; promote it by hand (`nomad deployment promote`) once it looks right.
  # A canary that fails its health check is reverted without touching the old instances.
  update {
    max_parallel      = 1
    canary            = 1
    min_healthy_time  = "15s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    health_check      = "checks"
    auto_revert       = true
    auto_promote      = false
  }

  group "control" {
    count = var.instances

    # Two instances on one host would fall together.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "http" {}
    }

    service {
      name     = "meridian-control"
      port     = "http"
      provider = "nomad"

      # /healthz answers 200 only while the database is reachable, so a cut-off instance leaves
      # the load balancer's rotation by itself.
      check {
        type     = "http"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "control" {
      driver = "docker"

      config {
        image   = var.image
        ports   = ["http"]
        command = "meridian"
        args = [
          "control", "serve",
          "--host", "0.0.0.0",
          "--port", "${NOMAD_PORT_http}",
          "--data-dir", "${NOMAD_TASK_DIR}/data",
          "--public-url", var.public_url,
        ]
      }

      # The database URL and the admin token come from the Nomad variable, never from the job
      # file: `meridian control serve` reads MERIDIAN_DATABASE_URL and MERIDIAN_ADMIN_TOKEN.
      template {
        destination = "${NOMAD_SECRETS_DIR}/control.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/meridian-control" }}
          MERIDIAN_DATABASE_URL={{ .database_url }}
          MERIDIAN_ADMIN_TOKEN={{ .admin_token }}
          {{ end }}
        EOT
      }

      # SIGTERM lets uvicorn finish open requests (long-polls end within their wait).
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}
