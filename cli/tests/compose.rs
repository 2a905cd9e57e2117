//! The container deployment checked against the federation it deploys, without building or
//! starting anything: docker-compose.yml, the Dockerfile and .dockerignore against
//! deploy/topology.toml and the state layout of `ecgfed demo setup` (one volume per party,
//! mounted at /var/lib/ecgfed/<party>). Where the docker client has the compose plugin, the
//! file must also pass `docker compose config -q`.
//!
//! Every check collects its problems and fails once, listing them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::{Mapping, Value};

const STATE_ROOT: &str = "/var/lib/ecgfed";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Fails listing every problem found, or passes when there is none.
fn check(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ------------------------------------------------------------------------------------------
// deploy/topology.toml

#[derive(Deserialize)]
struct Topology {
    sample: String,
    cohort: String,
    ledger: Endpoint,
    hospitals: Vec<Hospital>,
}

#[derive(Deserialize)]
struct Endpoint {
    listen: String,
    address: String,
}

#[derive(Deserialize)]
struct Hospital {
    member: String,
    site: String,
    input: String,
    listen: String,
    address: String,
}

fn topology_text() -> String {
    read("deploy/topology.toml")
}

fn topology() -> Topology {
    toml::from_str(&topology_text()).expect("deploy/topology.toml parses")
}

/// `host:port` → (host, port).
fn host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

fn port_of(addr: &str, what: &str) -> u16 {
    host_port(addr)
        .unwrap_or_else(|| panic!("{what} {addr:?} is not HOST:PORT"))
        .1
}

// ------------------------------------------------------------------------------------------
// docker-compose.yml, reduced to what the checks need (short and long syntaxes both read)

#[derive(Debug)]
enum Source {
    Bind(String),
    Volume(String),
    Anonymous,
    Tmpfs,
}

#[derive(Debug)]
struct Mount {
    source: Source,
    target: String,
    read_only: bool,
}

#[derive(Debug)]
struct Port {
    published: Option<u16>,
    target: u16,
}

#[derive(Debug, Default)]
struct Service {
    image: Option<String>,
    build: Option<(String, String)>,
    command: Vec<String>,
    mounts: Vec<Mount>,
    ports: Vec<Port>,
    /// target → condition
    depends_on: BTreeMap<String, String>,
    healthcheck: bool,
    restart: Option<String>,
    hostname: Option<String>,
    aliases: Vec<String>,
    profiles: Vec<String>,
}

impl Service {
    /// The value after `--flag` (or in `--flag=value`) in the command.
    fn arg(&self, flag: &str) -> Option<&str> {
        let mut it = self.command.iter();
        while let Some(a) = it.next() {
            if a == flag {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
        None
    }

    fn starts_with(&self, words: &[&str]) -> bool {
        self.command.len() >= words.len() && self.command.iter().zip(words).all(|(a, b)| a == b)
    }

    /// The mount whose target holds `path` (the deepest one, as the container sees it).
    fn mount_holding(&self, path: &str) -> Option<&Mount> {
        self.mounts
            .iter()
            .filter(|m| under(path, &m.target))
            .max_by_key(|m| m.target.len())
    }

    fn volume_mount(&self, volume: &str) -> Option<&Mount> {
        self.mounts
            .iter()
            .find(|m| matches!(&m.source, Source::Volume(v) if v == volume))
    }
}

struct Compose {
    services: BTreeMap<String, Service>,
    volumes: BTreeSet<String>,
}

fn compose() -> Compose {
    let mut problems = Vec::new();
    let c = parse_compose(&read("docker-compose.yml"), &mut problems);
    check("docker-compose.yml does not parse as expected", problems);
    c
}

fn parse_compose(text: &str, problems: &mut Vec<String>) -> Compose {
    let mut doc: Value = serde_norway::from_str(text).expect("docker-compose.yml is YAML");
    // Compose applies YAML merge keys (`<<: *anchor`); so does this reading.
    doc.apply_merge().expect("docker-compose.yml merge keys");
    let top = doc.as_mapping().expect("docker-compose.yml is a mapping");
    let mut services = BTreeMap::new();
    match top.get("services").and_then(Value::as_mapping) {
        Some(m) => {
            for (name, body) in m {
                let name = name
                    .as_str()
                    .expect("service names are strings")
                    .to_string();
                let body = body.as_mapping().cloned().unwrap_or_default();
                let s = parse_service(&name, &body, problems);
                services.insert(name, s);
            }
        }
        None => problems.push("no top-level `services` mapping".into()),
    }
    let volumes = top
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Compose { services, volumes }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(seq) => seq.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn parse_service(name: &str, m: &Mapping, problems: &mut Vec<String>) -> Service {
    let mut s = Service {
        image: m.get("image").and_then(scalar),
        hostname: m.get("hostname").and_then(scalar),
        restart: m.get("restart").and_then(scalar),
        profiles: m.get("profiles").map(strings).unwrap_or_default(),
        ..Service::default()
    };
    s.build = match m.get("build") {
        None => None,
        Some(Value::String(ctx)) => Some((ctx.clone(), "Dockerfile".into())),
        Some(Value::Mapping(b)) => Some((
            b.get("context")
                .and_then(scalar)
                .unwrap_or_else(|| ".".into()),
            b.get("dockerfile")
                .and_then(scalar)
                .unwrap_or_else(|| "Dockerfile".into()),
        )),
        Some(other) => {
            problems.push(format!("{name}: unreadable `build`: {other:?}"));
            None
        }
    };
    s.command = match m.get("command") {
        None => Vec::new(),
        // Compose splits a string command shell-like; these files use plain words.
        Some(Value::String(c)) => c.split_whitespace().map(str::to_string).collect(),
        Some(v) => strings(v),
    };
    for v in m
        .get("volumes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        match parse_mount(v) {
            Some(mount) => s.mounts.push(mount),
            None => problems.push(format!("{name}: unreadable volume entry {v:?}")),
        }
    }
    for v in m
        .get("ports")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        match parse_port(v) {
            Some(p) => s.ports.push(p),
            None => problems.push(format!(
                "{name}: unreadable port entry {v:?} (ranges are not expected here)"
            )),
        }
    }
    match m.get("depends_on") {
        None => {}
        Some(Value::Sequence(seq)) => {
            for t in seq.iter().filter_map(scalar) {
                s.depends_on.insert(t, "service_started".into());
            }
        }
        Some(Value::Mapping(map)) => {
            for (t, body) in map {
                let cond = body
                    .get("condition")
                    .and_then(scalar)
                    .unwrap_or_else(|| "service_started".into());
                s.depends_on
                    .insert(scalar(t).unwrap_or_default(), cond.to_string());
            }
        }
        Some(other) => problems.push(format!("{name}: unreadable `depends_on`: {other:?}")),
    }
    s.healthcheck = match m.get("healthcheck") {
        None => false,
        Some(h) => {
            let disabled = h.get("disable").and_then(Value::as_bool) == Some(true);
            let test = h.get("test").map(strings).unwrap_or_default();
            !disabled && !test.is_empty() && test[0] != "NONE"
        }
    };
    if let Some(Value::Mapping(nets)) = m.get("networks") {
        for body in nets.values() {
            s.aliases
                .extend(body.get("aliases").map(strings).unwrap_or_default());
        }
    }
    s
}

fn parse_mount(v: &Value) -> Option<Mount> {
    match v {
        Value::String(spec) => {
            let parts: Vec<&str> = spec.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => (None, *t, ""),
                [s, t] => (Some(*s), *t, ""),
                [s, t, m] => (Some(*s), *t, *m),
                _ => return None,
            };
            let source = match source {
                None => Source::Anonymous,
                Some(s) if s.starts_with(['.', '/', '~']) => Source::Bind(s.to_string()),
                Some(s) => Source::Volume(s.to_string()),
            };
            let read_only = mode.split(',').any(|m| m == "ro");
            Some(Mount {
                source,
                target: target.to_string(),
                read_only,
            })
        }
        Value::Mapping(m) => {
            let target = m.get("target").and_then(scalar)?;
            let src = m.get("source").and_then(scalar);
            let source = match (m.get("type").and_then(scalar)?.as_str(), src) {
                ("bind", Some(s)) => Source::Bind(s),
                ("volume", Some(s)) => Source::Volume(s),
                ("volume", None) => Source::Anonymous,
                ("tmpfs", _) => Source::Tmpfs,
                _ => return None,
            };
            let read_only = m.get("read_only").and_then(Value::as_bool) == Some(true);
            Some(Mount {
                source,
                target,
                read_only,
            })
        }
        _ => None,
    }
}

fn parse_port(v: &Value) -> Option<Port> {
    match v {
        Value::Number(n) => Some(Port {
            published: None,
            target: u16::try_from(n.as_u64()?).ok()?,
        }),
        Value::String(spec) => {
            let spec = spec.split('/').next()?;
            // [HOST_IP:][PUBLISHED:]TARGET, HOST_IP possibly `[::1]`.
            let mut parts = spec.rsplitn(3, ':');
            let target = parts.next()?.parse().ok()?;
            let published = match parts.next() {
                Some(p) if !p.is_empty() => Some(p.parse().ok()?),
                _ => None,
            };
            Some(Port { published, target })
        }
        Value::Mapping(m) => Some(Port {
            target: m.get("target").and_then(scalar)?.parse().ok()?,
            published: match m.get("published").and_then(scalar) {
                Some(p) => Some(p.parse().ok()?),
                None => None,
            },
        }),
        _ => None,
    }
}

/// Whether container path `path` is `dir` or lies below it (whole components).
fn under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(Path::new(dir))
}

/// Lexical normalisation (no file system): drops `.` and resolves `..` against earlier parts.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The services of the topology's roles, found by their addresses and commands.
struct Roles<'a> {
    ledger: Option<&'a str>,
    gateways: Vec<(&'a Hospital, &'a str)>,
}

fn roles<'a>(c: &'a Compose, t: &'a Topology, problems: &mut Vec<String>) -> Roles<'a> {
    let find = |host: &str| -> Option<&'a str> {
        c.services
            .iter()
            .find(|(name, s)| {
                name.as_str() == host
                    || s.hostname.as_deref() == Some(host)
                    || s.aliases.iter().any(|a| a == host)
            })
            .map(|(name, _)| name.as_str())
    };
    let ledger_host = host_port(&t.ledger.address).map(|(h, _)| h).unwrap_or("");
    let ledger = find(ledger_host);
    if ledger.is_none() {
        problems.push(format!(
            "topology ledger address {:?}: no compose service named (or with hostname/alias) {ledger_host:?}",
            t.ledger.address
        ));
    }
    let mut gateways = Vec::new();
    for h in &t.hospitals {
        let host = host_port(&h.address).map(|(h, _)| h).unwrap_or("");
        match find(host) {
            Some(svc) => gateways.push((h, svc)),
            None => problems.push(format!(
                "hospital {} ({}): address {:?} names host {host:?}, but no compose service is named (or has hostname/alias) {host:?}",
                h.member, h.site, h.address
            )),
        }
    }
    Roles { ledger, gateways }
}

/// The one-shot `ecgfed demo setup` service.
fn setup_service(c: &Compose) -> (&str, &Service) {
    let found: Vec<_> = c
        .services
        .iter()
        .filter(|(_, s)| s.starts_with(&["demo", "setup"]))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one service must run `ecgfed demo setup`; found {:?}",
        found.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    (found[0].0.as_str(), found[0].1)
}

// ------------------------------------------------------------------------------------------
// Dockerfile: the runtime stage's COPY destinations and ENTRYPOINT

struct Dockerfile {
    /// `ARG NAME=default` lines before the first FROM.
    args: BTreeMap<String, String>,
    froms: Vec<String>,
    /// runtime (last) stage: destination → sources, for COPY without --from.
    context_copies: Vec<(Vec<String>, String)>,
    entrypoint: Option<String>,
    text: String,
}

fn dockerfile(rel: &str) -> Dockerfile {
    let text = read(rel);
    // Join continuation lines, drop comments.
    let mut lines = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.starts_with('#') || t.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            lines.push(std::mem::take(&mut cur));
        }
    }
    let mut d = Dockerfile {
        args: BTreeMap::new(),
        froms: Vec::new(),
        context_copies: Vec::new(),
        entrypoint: None,
        text,
    };
    for l in &lines {
        let (instr, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let rest = rest.trim();
        match instr.to_ascii_uppercase().as_str() {
            "ARG" if d.froms.is_empty() => {
                if let Some((k, v)) = rest.split_once('=') {
                    d.args.insert(k.trim().into(), v.trim().into());
                }
            }
            "FROM" => {
                d.froms.push(rest.into());
                d.context_copies.clear();
                d.entrypoint = None;
            }
            "COPY" | "ADD" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                if words.iter().any(|w| w.starts_with("--from")) {
                    continue;
                }
                let words: Vec<String> = words
                    .into_iter()
                    .filter(|w| !w.starts_with("--"))
                    .map(str::to_string)
                    .collect();
                if let Some((dest, srcs)) = words.split_last() {
                    d.context_copies.push((srcs.to_vec(), dest.clone()));
                }
            }
            "ENTRYPOINT" => d.entrypoint = Some(rest.into()),
            _ => {}
        }
    }
    d
}

fn trim_slash(p: &str) -> &str {
    if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    }
}

/// `1.95` / `1.95.0` → (1, 95).
fn minor_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim_matches('"').split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

// ------------------------------------------------------------------------------------------
// The checks

#[test]
fn services_volumes_and_dependencies_are_well_formed() {
    let c = compose();
    let root = root();
    let mut p = Vec::new();
    if c.services.is_empty() {
        p.push("no services".into());
    }
    let mut used = BTreeSet::new();
    for (name, s) in &c.services {
        if s.image.is_none() && s.build.is_none() {
            p.push(format!("{name}: neither `image` nor `build`"));
        }
        if let Some((ctx, file)) = &s.build {
            let ctx_dir = root.join(ctx);
            if !ctx_dir.is_dir() {
                p.push(format!(
                    "{name}: build context {ctx:?} is not a folder beside docker-compose.yml"
                ));
            } else if !ctx_dir.join(file).is_file() {
                p.push(format!(
                    "{name}: build context {ctx:?} has no {file:?} (the Dockerfile)"
                ));
            }
        }
        if s.command.is_empty() {
            p.push(format!(
                "{name}: no `command` (the image's ENTRYPOINT is `ecgfed`; each service names its subcommand)"
            ));
        }
        let mut targets = BTreeSet::new();
        for m in &s.mounts {
            if !targets.insert(m.target.as_str()) {
                p.push(format!("{name}: two mounts at {:?}", m.target));
            }
            if !m.target.starts_with('/') {
                p.push(format!(
                    "{name}: mount target {:?} is not an absolute path",
                    m.target
                ));
            }
            match &m.source {
                Source::Bind(host) => {
                    if !root.join(host).exists() {
                        p.push(format!(
                            "{name}: bind-mounted host path {host:?} does not exist (relative to docker-compose.yml)"
                        ));
                    }
                }
                Source::Volume(v) => {
                    used.insert(v.clone());
                    if !c.volumes.contains(v) {
                        p.push(format!(
                            "{name}: named volume {v:?} is not declared under top-level `volumes`"
                        ));
                    }
                }
                Source::Anonymous | Source::Tmpfs => {}
            }
        }
        for (dep, cond) in &s.depends_on {
            let Some(target) = c.services.get(dep) else {
                p.push(format!(
                    "{name}: depends_on {dep:?}, which is not a service"
                ));
                continue;
            };
            match cond.as_str() {
                "service_started" => {}
                "service_healthy" if !target.healthcheck => p.push(format!(
                    "{name}: waits for {dep:?} to be healthy, but {dep:?} has no healthcheck"
                )),
                "service_healthy" => {}
                "service_completed_successfully" => {
                    if !matches!(target.restart.as_deref(), None | Some("no")) {
                        p.push(format!(
                            "{name}: waits for {dep:?} to complete, but {dep:?} restarts ({:?})",
                            target.restart
                        ))
                    }
                }
                other => p.push(format!(
                    "{name}: depends_on {dep:?} with unknown condition {other:?}"
                )),
            }
            if s.profiles.is_empty() && !target.profiles.is_empty() {
                p.push(format!(
                    "{name} (no profile) depends on {dep:?}, which runs only under profiles {:?}",
                    target.profiles
                ));
            }
        }
        if s.depends_on.contains_key(name) {
            p.push(format!("{name}: depends on itself"));
        }
    }
    for v in c.volumes.difference(&used) {
        p.push(format!(
            "top-level volume {v:?} is declared but no service mounts it"
        ));
    }
    // A named volume holds one party's state: every service that mounts it must see it at
    // the same path, since setup writes absolute paths into the files it leaves there.
    let mut at: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
    for (name, s) in &c.services {
        for m in &s.mounts {
            if let Source::Volume(v) = &m.source {
                at.entry(v).or_default().insert((m.target.as_str(), name));
            }
        }
    }
    for (v, places) in &at {
        let targets: BTreeSet<_> = places.iter().map(|(t, _)| *t).collect();
        if targets.len() > 1 {
            p.push(format!(
                "volume {v:?} is mounted at different paths: {places:?}"
            ));
        }
    }
    // Dependency cycles.
    for start in c.services.keys() {
        let mut stack: Vec<&str> = vec![start];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            for d in c
                .services
                .get(n)
                .map(|s| s.depends_on.keys())
                .into_iter()
                .flatten()
            {
                if d == start {
                    p.push(format!("depends_on cycle through {start:?}"));
                    stack.clear();
                    break;
                }
                if seen.insert(d.as_str()) {
                    stack.push(d);
                }
            }
        }
    }
    check("docker-compose.yml", p);
}

#[test]
fn topology_files_exist() {
    let t = topology();
    let deploy = root().join("deploy");
    let mut p = Vec::new();
    // Every file the topology names (a string value ending in .toml) lives in deploy/.
    let doc: toml::Table = toml::from_str(&topology_text()).unwrap();
    let mut named = Vec::new();
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) if s.ends_with(".toml") => out.push(s.clone()),
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            toml::Value::Table(t) => t.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    doc.values().for_each(|v| walk(v, &mut named));
    if !named.contains(&t.cohort) {
        p.push(format!("cohort {:?} is not a .toml file name", t.cohort));
    }
    for f in &named {
        if !deploy.join(f).is_file() {
            p.push(format!(
                "deploy/topology.toml names {f:?}, which is not a file in deploy/"
            ));
        }
    }
    let sample = deploy.join(&t.sample);
    if !sample.is_dir() {
        p.push(format!(
            "sample root {:?} (relative to deploy/) is not a folder",
            t.sample
        ));
    }
    let mut sites = BTreeSet::new();
    for h in &t.hospitals {
        if !sample.join(&h.input).is_dir() {
            p.push(format!(
                "hospital {}: input {:?} is not a folder under the sample root {:?}",
                h.member, h.input, t.sample
            ));
        }
        if !sites.insert(h.site.as_str()) {
            p.push(format!("site {:?} appears twice", h.site));
        }
    }
    check("deploy/topology.toml", p);
}

#[test]
fn compose_matches_the_topology() {
    let c = compose();
    let t = topology();
    let mut p = Vec::new();
    let roles = roles(&c, &t, &mut p);

    // Published ports: the container port is the `listen` port, published on the same host
    // port, and the `address` (what the other parties dial) uses that port too.
    let mut servers: Vec<(String, &str, (&str, &str))> = Vec::new();
    if let Some(svc) = roles.ledger {
        let e = (t.ledger.listen.as_str(), t.ledger.address.as_str());
        servers.push(("ledger".into(), svc, e));
    }
    for (h, svc) in &roles.gateways {
        let who = format!("hospital {} ({})", h.member, h.site);
        servers.push((who, svc, (h.listen.as_str(), h.address.as_str())));
    }
    for (who, svc, e) in &servers {
        let s = &c.services[*svc];
        let listen = port_of(e.0, "listen");
        let address = port_of(e.1, "address");
        if listen != address {
            p.push(format!(
                "{who}: listen port {listen} differs from address port {address} (no port mapping between containers)"
            ));
        }
        match s.ports.iter().find(|pt| pt.target == listen) {
            None => p.push(format!(
                "{who}: service {svc:?} does not publish its listen port {listen} (ports: {:?})",
                s.ports
            )),
            Some(pt) if pt.published != Some(listen) => p.push(format!(
                "{who}: service {svc:?} publishes container port {listen} on host port {:?}, expected {listen}",
                pt.published
            )),
            Some(_) => {}
        }
        if !s.healthcheck {
            p.push(format!(
                "{who}: server {svc:?} has no healthcheck for the others to wait on"
            ));
        }
        match s.restart.as_deref() {
            Some("always" | "unless-stopped") => {}
            Some(r) if r.starts_with("on-failure") => {}
            other => p.push(format!(
                "{who}: server {svc:?} has restart policy {other:?}; expected always, unless-stopped or on-failure"
            )),
        }
    }

    // The ledger serves on its topology `listen` with its key and data in its own volume.
    if let Some(svc) = roles.ledger {
        let ledger = &c.services[svc];
        if !ledger.starts_with(&["ledger", "serve"]) {
            p.push(format!(
                "service {svc:?} (the ledger's address host) does not run `ecgfed ledger serve`: {:?}",
                ledger.command
            ));
        }
        if ledger.arg("--listen") != Some(t.ledger.listen.as_str()) {
            p.push(format!(
                "{svc}: --listen {:?} differs from the topology's ledger listen {:?}",
                ledger.arg("--listen"),
                t.ledger.listen
            ));
        }
        let ledger_state = format!("{STATE_ROOT}/ledger");
        for flag in ["--data", "--key"] {
            match ledger.arg(flag) {
                Some(v) if under(v, &ledger_state) => {}
                other => p.push(format!(
                    "{svc}: {flag} {other:?} is not under {ledger_state}"
                )),
            }
        }
    }

    // Each gateway serves its own site's config from its own site volume.
    for (h, svc) in &roles.gateways {
        let s = &c.services[*svc];
        if !s.starts_with(&["gateway", "serve"]) {
            p.push(format!(
                "{svc}: does not run `ecgfed gateway serve`: {:?}",
                s.command
            ));
        }
        let site_state = format!("{STATE_ROOT}/{}", h.site);
        match s.arg("--config") {
            Some(cfg) if under(cfg, &site_state) => {}
            other => p.push(format!(
                "{svc}: --config {other:?} is not under {site_state} (hospital {} is site {:?})",
                h.member, h.site
            )),
        }
        let vol = format!("{}-data", h.site);
        match s.volume_mount(&vol) {
            Some(m) if m.target == site_state && !m.read_only => {}
            other => p.push(format!(
                "{svc}: must mount volume {vol:?} read-write at {site_state}; found {other:?}"
            )),
        }
        let foreign: Vec<_> = s
            .mounts
            .iter()
            .filter_map(|m| match &m.source {
                Source::Volume(v) if *v != vol => Some(v.as_str()),
                _ => None,
            })
            .collect();
        if !foreign.is_empty() {
            p.push(format!(
                "{svc}: mounts other parties' volumes {foreign:?}; a gateway sees only its own site"
            ));
        }
        if let Some(l) = roles.ledger
            && !s.depends_on.contains_key(l)
        {
            p.push(format!(
                "{svc}: does not depend on the ledger service {l:?}"
            ));
        }
    }

    // The trainer runs the topology's cohort spec (setup copies it into the trainer's
    // volume) after the ledger and every gateway are up.
    let trainers: Vec<_> = c
        .services
        .iter()
        .filter(|(_, s)| s.starts_with(&["train"]))
        .collect();
    if trainers.len() != 1 {
        p.push(format!(
            "expected one service running `ecgfed train`, found {:?}",
            trainers.iter().map(|(n, _)| n).collect::<Vec<_>>()
        ));
    }
    let cohort_file = Path::new(&t.cohort).file_name().unwrap().to_string_lossy();
    for (name, s) in trainers {
        let trainer_state = format!("{STATE_ROOT}/trainer");
        let spec = format!("{trainer_state}/{cohort_file}");
        if s.arg("--spec") != Some(spec.as_str()) {
            p.push(format!(
                "{name}: --spec {:?}, expected {spec:?} (the topology's cohort in the trainer's volume)",
                s.arg("--spec")
            ));
        }
        match s.arg("--out") {
            Some(o) if under(o, &trainer_state) => {}
            other => p.push(format!(
                "{name}: --out {other:?} is not under {trainer_state}"
            )),
        }
        let servers = roles
            .ledger
            .iter()
            .chain(roles.gateways.iter().map(|(_, s)| s));
        for dep in servers {
            match s.depends_on.get(*dep).map(String::as_str) {
                Some("service_healthy" | "service_started") => {}
                other => p.push(format!(
                    "{name}: must wait for server {dep:?} (service_healthy or service_started), has {other:?}"
                )),
            }
        }
    }

    // Anything that talks to the ledger remotely dials the topology's ledger address.
    for (name, s) in &c.services {
        for flag in ["--remote", "--ledger"] {
            if let Some(addr) = s.arg(flag)
                && addr != t.ledger.address
            {
                p.push(format!(
                    "{name}: {flag} {addr:?} differs from the topology's ledger address {:?}",
                    t.ledger.address
                ));
            }
        }
    }
    check("docker-compose.yml against deploy/topology.toml", p);
}

#[test]
fn setup_writes_every_partys_volume_at_the_partys_path() {
    let c = compose();
    let t = topology();
    let (setup, s) = setup_service(&c);
    let mut p = Vec::new();

    // --topology is the repository's deploy/ folder, bind-mounted.
    match s.arg("--topology") {
        None => p.push(format!("{setup}: no --topology")),
        Some(dir) => match s.mount_holding(dir) {
            Some(Mount {
                source: Source::Bind(host),
                target,
                ..
            }) if target == dir && normalise(Path::new(host)) == Path::new("deploy") => {}
            other => p.push(format!(
                "{setup}: --topology {dir:?} must be the bind mount of ./deploy; found {other:?}"
            )),
        },
    }
    // --data is the state root; each party's volume is <party>-data at <root>/<party>.
    let data = s.arg("--data").unwrap_or_default();
    if data != STATE_ROOT {
        p.push(format!(
            "{setup}: --data {data:?}, expected {STATE_ROOT:?} (the parent of every party's mount)"
        ));
    }
    let mut parties = vec!["ledger".to_string()];
    parties.extend(t.hospitals.iter().map(|h| h.site.clone()));
    parties.extend(["trainer".to_string(), "regulator".to_string()]);
    for party in &parties {
        let vol = format!("{party}-data");
        let path = format!("{data}/{party}");
        if !c.volumes.contains(&vol) {
            p.push(format!("party {party:?}: no top-level volume {vol:?}"));
        }
        match s.volume_mount(&vol) {
            Some(m) if m.target == path && !m.read_only => {}
            other => p.push(format!(
                "{setup}: must mount {vol:?} read-write at {path:?}; found {other:?}"
            )),
        }
    }
    for v in &c.volumes {
        if s.volume_mount(v).is_none() {
            p.push(format!("{setup}: does not mount volume {v:?}"));
        }
        let party = v.strip_suffix("-data").unwrap_or(v);
        for (name, other) in &c.services {
            if let Some(m) = other.volume_mount(v)
                && m.target != format!("{STATE_ROOT}/{party}")
            {
                p.push(format!(
                    "{name}: volume {v:?} at {:?}, expected {STATE_ROOT}/{party}",
                    m.target
                ));
            }
        }
    }
    // Every other service waits for setup (directly, until it completes, or through a
    // service that does).
    for (name, other) in &c.services {
        if name == setup {
            continue;
        }
        match other.depends_on.get(setup).map(String::as_str) {
            Some("service_completed_successfully") => {}
            Some(cond) => p.push(format!(
                "{name}: waits for {setup:?} with {cond:?}; expected service_completed_successfully"
            )),
            None => {
                let via = other.depends_on.keys().any(|d| {
                    c.services.get(d).and_then(|x| x.depends_on.get(setup))
                        == Some(&"service_completed_successfully".to_string())
                });
                if !via {
                    p.push(format!("{name}: does not wait for {setup:?} to complete"));
                }
            }
        }
        if other.restart.as_deref().is_some_and(|r| r != "no") && !other.healthcheck {
            p.push(format!("{name}: restarts but has no healthcheck"));
        }
    }
    if !matches!(s.restart.as_deref(), None | Some("no")) {
        p.push(format!(
            "{setup}: a one-shot must not restart ({:?})",
            s.restart
        ));
    }
    check("the setup service and the state layout", p);
}

#[test]
fn command_paths_lie_in_mounts_or_the_image() {
    let c = compose();
    let d = dockerfile("Dockerfile");
    let root = root();
    let mut p = Vec::new();
    // Paths that the image itself provides: the runtime stage's COPYs from the context.
    let image_paths: Vec<&str> = d
        .context_copies
        .iter()
        .map(|(_, dest)| trim_slash(dest))
        .collect();
    // Flags whose path the command writes.
    const WRITES: &[&str] = &["--out", "--data"];
    for (name, s) in &c.services {
        let mut prev: Option<&str> = None;
        for a in &s.command {
            let (flag, val) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (Some(f), v),
                _ => (prev.filter(|f| f.starts_with("--")), a.as_str()),
            };
            prev = Some(a);
            if !val.starts_with('/') {
                continue;
            }
            match s.mount_holding(val) {
                Some(m) => {
                    if m.read_only && flag.is_some_and(|f| WRITES.contains(&f)) {
                        p.push(format!(
                            "{name}: {} {val:?} is written, but its mount {:?} is read-only",
                            flag.unwrap(),
                            m.target
                        ));
                    }
                }
                // A folder that holds mounts (setup's --data, the state root).
                None if s.mounts.iter().any(|m| under(&m.target, val)) => {}
                None if image_paths.iter().any(|ip| under(val, ip)) => {
                    if flag.is_some_and(|f| WRITES.contains(&f)) {
                        p.push(format!(
                            "{name}: {} {val:?} would be written into the image, not a volume",
                            flag.unwrap()
                        ));
                    }
                }
                None => p.push(format!(
                    "{name}: path {val:?} in its command lies under none of its mounts {:?} nor the image's COPY destinations {image_paths:?}",
                    s.mounts.iter().map(|m| &m.target).collect::<Vec<_>>()
                )),
            }
        }
        // Every service's config folder /etc/ecgfed is the repository's deploy/, in the image
        // and where it is bind-mounted.
        for m in &s.mounts {
            if let Source::Bind(host) = &m.source
                && under(&m.target, "/etc/ecgfed")
                && (!m.read_only || normalise(Path::new(host)) != Path::new("deploy"))
            {
                p.push(format!(
                    "{name}: /etc/ecgfed must be ./deploy mounted read-only; found {m:?}"
                ));
            }
        }
    }
    // The image's COPYs of deploy/ and the sample exist and land where the commands expect.
    let copies: BTreeMap<&str, Vec<String>> = d
        .context_copies
        .iter()
        .map(|(srcs, dest)| {
            (
                trim_slash(dest),
                srcs.iter().map(|s| trim_slash(s).to_string()).collect(),
            )
        })
        .collect();
    for (dest, srcs) in &copies {
        for src in srcs {
            if !root.join(src).exists() {
                p.push(format!(
                    "Dockerfile: COPY {src} {dest}: {src:?} is not in the build context"
                ));
            }
        }
    }
    if copies.get("/etc/ecgfed") != Some(&vec!["deploy".to_string()]) {
        p.push(format!(
            "Dockerfile: the runtime stage must COPY deploy/ to /etc/ecgfed; found {copies:?}"
        ));
    }
    let (setup, s) = setup_service(&c);
    match s.arg("--sample") {
        Some(sample) => {
            if copies.get(trim_slash(sample)) != Some(&vec!["datasets/sample".to_string()]) {
                p.push(format!(
                    "{setup}: --sample {sample:?} is not where the Dockerfile copies datasets/sample ({copies:?})"
                ));
            }
        }
        None => p.push(format!(
            "{setup}: no --sample (deploy/topology.toml's relative sample root is not in the image)"
        )),
    }
    check("command paths", p);
}

#[test]
fn dockerfile_and_dockerignore_fit_the_workspace() {
    let d = dockerfile("Dockerfile");
    let mut p = Vec::new();
    if d.froms.len() < 2 {
        p.push(format!(
            "Dockerfile: expected a multi-stage build, found FROM {:?}",
            d.froms
        ));
    }
    // The builder image's Rust is at least the workspace's rust-version.
    let cargo: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let want = cargo["workspace"]["package"]["rust-version"]
        .as_str()
        .and_then(minor_version)
        .expect("workspace rust-version");
    let builder = d.froms.first().cloned().unwrap_or_default();
    let image = builder.split_whitespace().next().unwrap_or_default();
    let image = d.args.iter().fold(image.to_string(), |acc, (k, v)| {
        acc.replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v)
    });
    match image
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .and_then(minor_version)
    {
        Some(have) if have >= want => {}
        other => p.push(format!(
            "Dockerfile: builder {image:?} must be a Rust image of version >= {}.{} (workspace rust-version); read {other:?}",
            want.0, want.1
        )),
    }
    if !image.contains("bookworm") {
        p.push(format!(
            "Dockerfile: builder {image:?} is not Debian bookworm"
        ));
    }
    let runtime = d.froms.last().cloned().unwrap_or_default();
    if !runtime.starts_with("debian:bookworm-slim") {
        p.push(format!(
            "Dockerfile: runtime stage {runtime:?} is not debian:bookworm-slim"
        ));
    }
    for needle in [
        "scripts/setup.sh",
        "cargo build --release --locked -p ecgfed",
        "LD_LIBRARY_PATH",
        "USER ",
    ] {
        if !d.text.contains(needle) {
            p.push(format!("Dockerfile: does not contain {needle:?}"));
        }
    }
    match d.entrypoint.as_deref() {
        Some(r#"["ecgfed"]"#) => {}
        other => p.push(format!(
            "Dockerfile: the runtime ENTRYPOINT must be [\"ecgfed\"] (compose commands are its arguments); found {other:?}"
        )),
    }
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for must in ["target", ".venv*", "out", ".git"] {
        if !patterns.contains(&must) {
            p.push(format!(".dockerignore: does not leave out {must:?}"));
        }
    }
    for keep in [
        "deploy",
        "datasets",
        "scripts",
        "Cargo.lock",
        ".cargo",
        "cli",
    ] {
        if patterns
            .iter()
            .any(|pat| *pat == keep || pat.starts_with(&format!("{keep}/")))
        {
            p.push(format!(
                ".dockerignore: leaves out {keep:?}, which the image build needs"
            ));
        }
    }
    check("Dockerfile / .dockerignore", p);
}

#[test]
fn docker_compose_config_accepts_the_file() {
    let version = Command::new("docker").args(["compose", "version"]).output();
    match version {
        Err(e) => {
            println!("skipped `docker compose config`: no docker client ({e})");
            return;
        }
        Ok(o) if !o.status.success() => {
            println!(
                "skipped `docker compose config`: the docker client has no compose plugin ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Ok(_) => {}
    }
    let o = Command::new("docker")
        .args(["compose", "-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .expect("docker compose config runs");
    assert!(
        o.status.success(),
        "docker compose config -q rejected docker-compose.yml:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
