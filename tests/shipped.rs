//! The files shipped for running sipwarden (the systemd unit, the Docker
//! setup, the Asterisk sample) agree with each other and with the built-in
//! defaults: no Docker engine or systemd runs where the tests do, so what
//! can be checked by reading is checked here.

use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The values of `key=` lines in a unit file, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

/// A `key = value` of an Asterisk config file (`;` starts a comment).
fn asterisk_value<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    conf.lines()
        .map(|l| l.split(';').next().unwrap_or_default())
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// The list items (`- item`) of a docker-compose service's `key:` block.
fn compose_items(compose: &str, service: &str, key: &str) -> Vec<String> {
    let mut in_service = false;
    let mut in_key = false;
    let mut items = Vec::new();
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if indent == 2 {
            in_service = t == format!("{service}:");
            in_key = false;
        } else if in_service && indent == 4 {
            in_key = t == format!("{key}:");
        } else if in_service && in_key && indent >= 6 {
            if let Some(item) = t.strip_prefix("- ") {
                items.push(item.trim_matches('"').to_string());
            }
        }
    }
    items
}

const MINIMAL: &str = "[listen]\nadvertise = \"pbx.example.com:5060\"\n";

#[test]
fn the_systemd_unit_can_write_the_default_key_file() {
    let unit = read("config/sipwarden.service");
    // /etc is read-only to the service; its state directory is the one
    // place it can write.
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    assert_eq!(unit_values(&unit, "DynamicUser"), ["yes"]);
    let state = unit_values(&unit, "StateDirectory");
    assert_eq!(state.len(), 1, "one StateDirectory");
    assert!(unit_values(&unit, "ReadWritePaths").is_empty());
    let writable = format!("/var/lib/{}/", state[0]);
    let cfg = sipwarden_core::config::parse(MINIMAL, "minimal").unwrap();
    let key = cfg.secret.key_file.to_string_lossy().into_owned();
    assert!(
        key.starts_with(&writable),
        "the default secret.key_file {key} is not in the unit's state directory {writable}"
    );
}

#[test]
fn the_systemd_unit_can_make_the_default_control_socket() {
    let unit = read("config/sipwarden.service");
    let run = unit_values(&unit, "RuntimeDirectory");
    assert_eq!(run.len(), 1, "one RuntimeDirectory");
    assert_eq!(unit_values(&unit, "RuntimeDirectoryMode"), ["0700"]);
    let cfg = sipwarden_core::config::parse(MINIMAL, "minimal").unwrap();
    let sock = cfg.control.socket.to_string_lossy().into_owned();
    assert!(
        sock.starts_with(&format!("/run/{}/", run[0])),
        "the default control.socket {sock} is not in the unit's runtime directory"
    );
    let families = unit_values(&unit, "RestrictAddressFamilies");
    assert!(
        families
            .iter()
            .any(|f| f.split_whitespace().any(|w| w == "AF_UNIX")),
        "the control socket needs AF_UNIX: {families:?}"
    );
    // The example config keeps its socket beside its state; installed for
    // the unit, that line goes, as the unit's comment says.
    let example = read("config/sipwarden.toml");
    assert!(example.lines().any(|l| l.starts_with("socket = ")));
    assert!(unit.contains("-e '/^socket = /d'"));
}

#[test]
fn the_systemd_unit_reads_its_config_from_its_configuration_directory() {
    let unit = read("config/sipwarden.service");
    let conf = unit_values(&unit, "ConfigurationDirectory");
    assert_eq!(conf.len(), 1);
    let path = format!("/etc/{}/sipwarden.toml", conf[0]);
    for key in ["ExecStartPre", "ExecStart"] {
        let cmd = unit_values(&unit, key);
        assert_eq!(cmd.len(), 1, "{key}");
        assert!(
            cmd[0].ends_with(&format!("--config {path}")),
            "{key}={}",
            cmd[0]
        );
    }
    assert!(unit_values(&unit, "ExecStartPre")[0].contains(" check "));
    // The capability a public port below 1024 would need stays.
    assert_eq!(
        unit_values(&unit, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
}

#[test]
fn compose_publishes_the_rtp_range_of_rtp_conf() {
    let rtp = read("config/asterisk/rtp.conf");
    let start: u16 = asterisk_value(&rtp, "rtpstart").unwrap().parse().unwrap();
    let end: u16 = asterisk_value(&rtp, "rtpend").unwrap().parse().unwrap();
    assert!(start < end);
    // RTP on an even port, RTCP on the next: the last port of the range is
    // an RTCP port, so the published range holds every pair.
    assert!(start.is_multiple_of(2) && end % 2 == 1, "{start}-{end}");
    let compose = read("docker/docker-compose.yml");
    let ports = compose_items(&compose, "asterisk", "ports");
    let want = format!("{start}-{end}:{start}-{end}/udp");
    assert!(ports.contains(&want), "{ports:?} lacks {want}");
    assert!(ports.contains(&"5060:5060/udp".to_string()), "{ports:?}");
    assert!(ports.contains(&"5060:5060/tcp".to_string()), "{ports:?}");
}

#[test]
fn compose_mounts_every_file_of_the_asterisk_sample() {
    let compose = read("docker/docker-compose.yml");
    let volumes = compose_items(&compose, "asterisk", "volumes");
    let mut files: Vec<String> = std::fs::read_dir(repo("config/asterisk"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.contains(&"modules.conf".to_string()), "{files:?}");
    for f in &files {
        let want = format!("../config/asterisk/{f}:/etc/asterisk/{f}:ro");
        assert!(volumes.contains(&want), "{volumes:?} lacks {want}");
    }
}

#[test]
fn compose_mounts_the_sipwarden_config_as_a_directory() {
    let compose = read("docker/docker-compose.yml");
    let volumes = compose_items(&compose, "sipwarden", "volumes");
    // A file mount keeps the old file after an editor's save-by-rename, and
    // a reload would read it again.
    let dir = volumes
        .iter()
        .find_map(|v| v.strip_suffix(":/etc/sipwarden:ro"))
        .unwrap_or_else(|| panic!("no directory mount on /etc/sipwarden: {volumes:?}"))
        .trim_start_matches("./");
    assert!(
        !volumes.iter().any(|v| v.contains("/etc/sipwarden/")),
        "{volumes:?}"
    );
    let host = repo("docker").join(dir).join("sipwarden.toml");
    let cfg = sipwarden::preflight::load(&host, sipwarden::preflight::Probe::TextOnly)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    // The key and the state go to the state volume.
    let state = volumes
        .iter()
        .find_map(|v| v.strip_prefix("sipwarden-state:"))
        .expect("the state volume");
    assert_eq!(state, "/var/lib/sipwarden");
    assert!(cfg.secret.key_file.starts_with(state));
    assert!(cfg.state.path.as_ref().unwrap().starts_with(state));
    let dockerfile = read("docker/Dockerfile");
    assert!(dockerfile.contains("VOLUME [\"/var/lib/sipwarden\"]"));
    let copied = format!("COPY docker/{dir}/sipwarden.toml /etc/sipwarden/sipwarden.toml");
    assert!(
        dockerfile.lines().any(|l| l.trim() == copied),
        "the image's default config is not {copied}"
    );
}

/// The image's build stage copies everything a workspace build reads:
/// every member's directory (cargo reads each member's manifest even to
/// build one binary), the root manifest, lock file and build script, and
/// the program's sources. A member added without its COPY line fails here,
/// not in an operator's `docker build`.
#[test]
fn the_dockerfile_copies_the_whole_workspace() {
    let dockerfile = read("docker/Dockerfile");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len().saturating_sub(1)].to_vec()
        })
        .collect();
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = "))
        .expect("a [workspace] members line");
    let mut needed: Vec<String> = members
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| m != ".")
        .collect();
    needed.extend(["Cargo.toml", "Cargo.lock", "build.rs", "src"].map(String::from));
    for path in &needed {
        assert!(repo(path).exists(), "{path} is not in the repository");
        assert!(
            copied.iter().any(|c| {
                let c = c.trim_end_matches('/');
                c == path || path.starts_with(&format!("{c}/"))
            }),
            "docker/Dockerfile does not copy {path} into the build stage (copied: {copied:?})"
        );
    }
}

/// Every text file of the repository (sources, docs, configs, scripts):
/// skips build output, git's own files and fuzz inputs.
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if !matches!(
                name.as_ref(),
                "target" | ".git" | "node_modules" | "corpus" | "artifacts"
            ) {
                repository_files(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// The repository explains itself: no file points at a design document or
/// a directory outside it (the brief the project started from is not part
/// of a clone).
#[test]
fn the_repository_refers_to_nothing_outside_it() {
    // Built from parts so that this file does not name them itself.
    let needles = [
        ["DESIGN", ".md"].concat(),
        ["..", "/shared"].concat(),
        ["/work", "/shared"].concat(),
    ];
    let mut files = Vec::new();
    repository_files(Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut found = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue; // not text
        };
        for n in &needles {
            if text.contains(n.as_str()) {
                found.push(format!("{}: {n}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}
