//! Writing release records exactly as Helm writes them: for tests, benches, the demo and
//! anyone who wants fixtures without a cluster.
//!
//! [`encode_release`] is Helm's `encodeRelease` (JSON → gzip at best compression → standard
//! base64); [`ReleaseRecord::secret`] and [`ReleaseRecord::config_map`] wrap it the way the
//! Secret and ConfigMap drivers do (name, labels, type), in the form `kubectl get -o json`
//! prints. [`History`] plays `helm install` / `upgrade` / `rollback` on a [`Chart`], following
//! Helm's write order (a `pending-*` revision first, `deployed` after) and its value-reuse
//! rules, so revision chains in tests are produced the way Helm produces them rather than
//! written out by hand.

use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use crate::release::Status;
use crate::values::coalesce::{UpgradeValues, coalesce_values, reuse_values};

/// gzip at `gzip.BestCompression`, as Helm does.
pub fn gzip_best(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Helm's `encodeRelease`: the string stored in `data.release`.
pub fn encode_release(json: &[u8]) -> String {
    STANDARD.encode(gzip_best(json))
}

/// A chart: metadata, default values, and a renderer standing in for its templates.
#[derive(Clone)]
pub struct Chart {
    pub name: String,
    pub version: String,
    pub app_version: String,
    pub values: Value,
    /// Renders the manifest from the coalesced values (what `helm template` would print,
    /// without hooks).
    pub render: fn(&Value) -> String,
}

/// One revision of a release, as Helm's `Release` struct holds it.
#[derive(Clone, Debug)]
pub struct ReleaseRecord {
    pub name: String,
    pub namespace: String,
    pub revision: u32,
    pub status: Status,
    pub chart_name: String,
    pub chart_version: String,
    pub app_version: String,
    pub chart_values: Value,
    pub config: Value,
    pub manifest: String,
    pub description: String,
}

impl ReleaseRecord {
    /// The record name shared by both drivers: `sh.helm.release.v1.<name>.v<revision>`.
    pub fn object_name(&self) -> String {
        format!("sh.helm.release.v1.{}.v{}", self.name, self.revision)
    }

    /// The release JSON (`json.Marshal(rls)` field names and shape).
    pub fn to_json(&self) -> Value {
        let time = "2026-11-26T10:00:00.000000000Z";
        json!({
            "name": self.name,
            "info": {
                "first_deployed": time,
                "last_deployed": time,
                "deleted": "",
                "description": self.description,
                "status": self.status.as_str(),
                "notes": "",
            },
            "chart": {
                "metadata": {
                    "name": self.chart_name,
                    "version": self.chart_version,
                    "appVersion": self.app_version,
                    "apiVersion": "v2",
                },
                "lock": null,
                "templates": [
                    {"name": "templates/workload.yaml", "data": STANDARD.encode("{{/* template */}}")}
                ],
                "values": self.chart_values,
                "schema": null,
                "files": [],
            },
            "config": self.config,
            "manifest": self.manifest,
            "hooks": [],
            "version": self.revision,
            "namespace": self.namespace,
        })
    }

    /// The Helm string stored in `data.release`.
    pub fn encoded(&self) -> String {
        encode_release(self.to_json().to_string().as_bytes())
    }

    fn labels(&self) -> Value {
        json!({
            "name": self.name,
            "owner": "helm",
            "status": self.status.as_str(),
            "version": self.revision.to_string(),
            "createdAt": "1795687200",
        })
    }

    /// The Secret driver's object, as `kubectl get secret -o json` prints it (the API's own
    /// base64 layer on `data`).
    pub fn secret(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.object_name(),
                "namespace": self.namespace,
                "labels": self.labels(),
            },
            "type": "helm.sh/release.v1",
            "data": { "release": STANDARD.encode(self.encoded()) },
        })
    }

    /// The ConfigMap driver's object: one base64 layer, no type.
    pub fn config_map(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.object_name(),
                "namespace": self.namespace,
                "labels": self.labels(),
            },
            "data": { "release": self.encoded() },
        })
    }
}

/// A release's history, driven like the Helm CLI drives it.
#[derive(Clone, Debug)]
pub struct History {
    pub revisions: Vec<ReleaseRecord>,
}

impl History {
    /// `helm install NAME CHART -n NAMESPACE --set …` through to `deployed`.
    pub fn install(name: &str, namespace: &str, chart: &Chart, values: Value) -> Self {
        let mut h = Self {
            revisions: Vec::new(),
        };
        h.push(
            (name, namespace),
            chart,
            (chart.values.clone(), values),
            Status::PendingInstall,
            "Install complete",
        );
        h.complete();
        h
    }

    /// Appends a revision rendered from `(chart_values, config)`.
    fn push(
        &mut self,
        (name, namespace): (&str, &str),
        chart: &Chart,
        (chart_values, config): (Value, Value),
        status: Status,
        description: &str,
    ) -> &ReleaseRecord {
        let manifest = (chart.render)(&coalesce_values(&chart_values, &config));
        self.revisions.push(ReleaseRecord {
            name: name.into(),
            namespace: namespace.into(),
            revision: self.revisions.len() as u32 + 1,
            status,
            chart_name: chart.name.clone(),
            chart_version: chart.version.clone(),
            app_version: chart.app_version.clone(),
            chart_values,
            config,
            manifest,
            description: description.into(),
        });
        &self.revisions[self.revisions.len() - 1]
    }

    /// The revision an upgrade starts from: the last deployed one (Helm's `prepareUpgrade`).
    fn current(&self) -> &ReleaseRecord {
        self.revisions
            .iter()
            .rev()
            .find(|r| r.status == Status::Deployed)
            .or(self.revisions.last())
            .expect("a history has at least one revision")
    }

    /// `helm upgrade` up to the moment Helm has written the `pending-upgrade` revision and
    /// has not yet touched any workload. Call [`History::complete`] to finish it.
    pub fn begin_upgrade(
        &mut self,
        chart: &Chart,
        cli_values: Value,
        mode: UpgradeValues,
    ) -> &ReleaseRecord {
        let current = self.current().clone();
        let (config, chart_values) = reuse_values(
            mode,
            &current.config,
            &current.chart_values,
            &chart.values,
            &cli_values,
        );
        self.push(
            (&current.name, &current.namespace),
            chart,
            (chart_values, config),
            Status::PendingUpgrade,
            "Preparing upgrade",
        )
    }

    /// Finishes the pending operation: the previous deployed revision becomes `superseded`,
    /// the pending one `deployed`.
    pub fn complete(&mut self) -> &ReleaseRecord {
        let last = self.revisions.len() - 1;
        for r in &mut self.revisions[..last] {
            if r.status == Status::Deployed {
                r.status = Status::Superseded;
            }
        }
        let r = &mut self.revisions[last];
        r.status = Status::Deployed;
        &self.revisions[last]
    }

    /// Marks the pending operation `failed` (the previous deployed revision stays deployed).
    pub fn fail(&mut self) -> &ReleaseRecord {
        let last = self.revisions.len() - 1;
        self.revisions[last].status = Status::Failed;
        &self.revisions[last]
    }

    /// The release index of every revision, each record decoded as the server decodes it
    /// (a record that does not decode is left out).
    pub fn index(&self) -> crate::store::Index {
        let mut idx = crate::store::Index::default();
        for r in &self.revisions {
            if let Some(Ok(rev)) =
                crate::helm::record::index_record(&r.secret(), crate::helm::DecodeLimits::default())
            {
                idx.apply(rev);
            }
        }
        idx
    }

    pub fn last(&self) -> &ReleaseRecord {
        &self.revisions[self.revisions.len() - 1]
    }

    /// All revisions as Secrets, as `kubectl get secrets -l owner=helm -o json` lists them.
    pub fn secrets_list(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": self.revisions.iter().map(ReleaseRecord::secret).collect::<Vec<_>>(),
        })
    }
}

/// Release `db/db` of [`postgres_chart`]: revision 1 (`--set image.tag=11.22.0`,
/// superseded) and revision 2 (`--set image.tag=15.4.0`, deployed), with `password` in the
/// values — the fixture the integration tests judge edits against.
pub fn postgres_history(password: &str) -> History {
    let values = |tag: &str| json!({"image": {"tag": tag}, "auth": {"postgresPassword": password}});
    let mut h = History::install(
        "db",
        "db",
        &postgres_chart("12.0.0", "11.22.0"),
        values("11.22.0"),
    );
    h.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        values("15.4.0"),
        UpgradeValues::Default,
    );
    h.complete();
    h
}

/// The bundled PostgreSQL-like chart of the demo and the tests. Its values hold a password,
/// which its manifest renders into a Secret: exactly what must never leak.
pub fn postgres_chart(version: &str, default_tag: &str) -> Chart {
    Chart {
        name: "postgresql".into(),
        version: version.into(),
        app_version: default_tag.into(),
        values: json!({
            "image": {"registry": "docker.io", "repository": "bitnami/postgresql", "tag": default_tag},
            "auth": {"postgresPassword": ""},
            "metrics": {"image": {"registry": "docker.io", "repository": "bitnami/postgres-exporter", "tag": "0.15.0"}},
        }),
        render: render_postgres,
    }
}

fn render_postgres(v: &Value) -> String {
    let s = |p: &str| {
        v.pointer(p)
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let image = |p: &str| {
        format!(
            "{}/{}:{}",
            s(&format!("{p}/registry")),
            s(&format!("{p}/repository")),
            s(&format!("{p}/tag"))
        )
    };
    format!(
        r#"---
# Source: postgresql/templates/secrets.yaml
apiVersion: v1
kind: Secret
metadata:
  name: db-postgresql
type: Opaque
data:
  postgres-password: "{password}"
---
# Source: postgresql/templates/svc.yaml
apiVersion: v1
kind: Service
metadata:
  name: db-postgresql
spec:
  ports:
    - name: tcp-postgresql
      port: 5432
---
# Source: postgresql/templates/primary/statefulset.yaml
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db-postgresql
  labels:
    app.kubernetes.io/name: postgresql
spec:
  serviceName: db-postgresql
  template:
    metadata:
      labels:
        app.kubernetes.io/name: postgresql
    spec:
      containers:
        - name: postgresql
          image: {main}
          env:
            - name: POSTGRES_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: db-postgresql
                  key: postgres-password
        - name: metrics
          image: {metrics}
"#,
        password = STANDARD.encode(s("/auth/postgresPassword")),
        main = image("/image"),
        metrics = image("/metrics/image"),
    )
}
