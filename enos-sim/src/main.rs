//! The `enos-sim` command: runs the sim, or talks to a running one's admin API.
//!
//! ```text
//! enos-sim --config FILE [--mqtt HOST:PORT] [--http PORT]
//! enos-sim task --admin URL --product PK --device DK --version V [--policy push|request]
//! enos-sim devices --admin URL
//! enos-sim status --admin URL [--task ID]
//! ```
//!
//! Running, it prints one line on stdout once the broker granted its subscriptions,
//! `enos-sim http=http://127.0.0.1:PORT mqtt=connected`, and then runs until killed;
//! diagnostics go to stderr. The admin subcommands print the JSON answer and exit 0 on a
//! 2xx status, 1 otherwise.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use enos_sim::client;
use enos_sim::config::{Config, Policy, TaskRequest};
use enos_sim::Sim;

const USAGE: &str = "usage:
  enos-sim --config FILE [--mqtt HOST:PORT] [--http PORT]
  enos-sim task --admin URL --product PK --device DK --version V [--policy push|request]
  enos-sim devices --admin URL
  enos-sim status --admin URL [--task ID]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("task" | "devices" | "status") => admin(&args[0], &args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enos-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs; an unknown or valueless flag is an error.
fn flags<'a>(args: &'a [String], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !known.contains(&flag.as_str()) {
            return Err(format!("unknown argument {flag}\n{USAGE}"));
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        out.push((flag.as_str(), value.as_str()));
    }
    Ok(out)
}

fn get<'a>(flags: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

fn run(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--config", "--mqtt", "--http"])?;
    let path = get(&f, "--config").ok_or(format!("--config is required\n{USAGE}"))?;
    let config = Config::load(&PathBuf::from(path))?;
    let http = get(&f, "--http")
        .map(|p| p.parse::<u16>().map_err(|_| format!("bad --http port {p}")))
        .transpose()?;
    let sim = Sim::start(&config, get(&f, "--mqtt"), http)?;
    eprintln!(
        "enos-sim: HTTP on {}, connecting to {}",
        sim.http_url(),
        sim.mqtt_addr()
    );
    // Scripts read the first stdout line, so it comes only once the sim can hear devices.
    while !sim.wait_ready(Duration::from_secs(5)) {
        eprintln!(
            "enos-sim: still waiting for the broker at {}",
            sim.mqtt_addr()
        );
    }
    println!("enos-sim http={} mqtt=connected", sim.http_url());
    loop {
        std::thread::park();
    }
}

fn admin(command: &str, args: &[String]) -> Result<(), String> {
    let f = flags(
        args,
        &[
            "--admin",
            "--product",
            "--device",
            "--version",
            "--policy",
            "--task",
        ],
    )?;
    let base = get(&f, "--admin").ok_or(format!("--admin URL is required\n{USAGE}"))?;
    let (addr, prefix) = client::split_url(base)?;
    let prefix = prefix.trim_end_matches('/');
    let response = match command {
        "task" => {
            let need = |n: &str| get(&f, n).ok_or(format!("{n} is required\n{USAGE}"));
            let policy = match get(&f, "--policy").unwrap_or("push") {
                "push" => Policy::Push,
                "request" => Policy::Request,
                other => return Err(format!("--policy is push or request, not {other}")),
            };
            let req = TaskRequest {
                product_key: need("--product")?.to_string(),
                device_key: need("--device")?.to_string(),
                version: need("--version")?.to_string(),
                policy,
            };
            let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
            client::request(
                &addr,
                "POST",
                &format!("{prefix}/admin/tasks"),
                &[("Content-Type", "application/json")],
                &body,
            )?
        }
        "devices" => client::request(&addr, "GET", &format!("{prefix}/admin/devices"), &[], &[])?,
        _ => {
            let path = match get(&f, "--task") {
                Some(id) => format!("{prefix}/admin/tasks/{id}"),
                None => format!("{prefix}/admin/tasks"),
            };
            client::request(&addr, "GET", &path, &[], &[])?
        }
    };
    println!("{}", String::from_utf8_lossy(&response.body));
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status))
    }
}
