//! Child processes: servers started and waited for until they say where they listen, steps
//! run in the foreground, and all of them stopped with SIGTERM at the end (or on Ctrl-C).
//! The demo, the process tests and the benches start `ecgfed` this way.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};

/// This program, to start again as a child: `/proc/self/exe` where it exists, so that a
/// binary replaced on disk while running (a rebuild) still starts itself, not the new build
/// or nothing.
pub fn self_exe() -> Result<PathBuf> {
    let proc_self = PathBuf::from("/proc/self/exe");
    if proc_self.exists() {
        return Ok(proc_self);
    }
    std::env::current_exe().context("locating this program's binary")
}

/// The program's name for messages: its file name (`ecgfed`), that of this program where
/// `exe` is `/proc/self/exe`.
pub fn program_name(exe: &Path) -> String {
    let named = if exe == Path::new("/proc/self/exe") {
        std::env::current_exe().ok()
    } else {
        Some(exe.to_path_buf())
    };
    named.as_deref().and_then(Path::file_name).map_or_else(
        || exe.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// Spawns `cmd` (a server printing `listening on ADDR` as its first line of standard output)
/// and returns the child and ADDR. A server that says anything else is stopped.
pub fn spawn_listening(cmd: &mut Command) -> Result<(Child, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    match first_line_address(&mut child) {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            terminate(child.id());
            let _ = child.wait();
            Err(e.context(format!("{cmd:?} did not start")))
        }
    }
}

/// Reads the child's first line of standard output and takes ADDR from `listening on ADDR`.
fn first_line_address(child: &mut Child) -> Result<String> {
    let out = child.stdout.take().context("no standard output")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .context("reading its first line")?;
    line.trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
        .ok_or_else(|| anyhow!("its first line was {line:?}, not `listening on ADDR`"))
}

/// Runs `exe ARGS` to completion with `env` added; returns its standard output, or fails
/// with its standard error.
pub fn output(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let o = Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("running {} {}", program_name(exe), args.join(" ")))?;
    if !o.status.success() {
        bail!(
            "{} {} failed ({}):\n{}",
            program_name(exe),
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The child processes of one program (`ecgfed`) to stop at the end or on Ctrl-C: the
/// servers started, and the pid of the step running in the foreground. Clones share them.
#[derive(Clone)]
pub struct Procs {
    exe: PathBuf,
    servers: Arc<Mutex<Vec<Child>>>,
    foreground: Arc<Mutex<Option<u32>>>,
    interrupted: Arc<AtomicBool>,
}

impl Procs {
    /// Children of the program at `exe`.
    pub fn new(exe: PathBuf) -> Procs {
        Procs {
            exe,
            servers: Arc::default(),
            foreground: Arc::default(),
            interrupted: Arc::default(),
        }
    }

    /// The program the children run.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Starts `exe ARGS` as a server, its standard error into the file `log`, and waits for
    /// its `listening on ADDR` line; returns ADDR.
    pub fn serve(&self, args: &[&str], log: &Path) -> Result<String> {
        if let Some(d) = log.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let err =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&self.exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} {}", program_name(&self.exe), args.join(" ")))?;
        let addr = first_line_address(&mut child);
        self.servers
            .lock()
            .map_err(|_| anyhow!("the list of servers is poisoned"))?
            .push(child);
        addr.with_context(|| {
            format!(
                "{} {} did not start (its log: {})",
                program_name(&self.exe),
                args.join(" "),
                log.display()
            )
        })
    }

    /// The process id of the server started last.
    pub fn last_pid(&self) -> Option<u32> {
        self.servers.lock().ok()?.last().map(Child::id)
    }

    /// Runs `exe ARGS` in the foreground (standard output discarded) until it ends; a stop
    /// ([`Procs::stop_all`]) meanwhile ends it too.
    pub fn run(&self, args: &[&str]) -> Result<ExitStatus> {
        let mut child = Command::new(&self.exe)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} {}", program_name(&self.exe), args.join(" ")))?;
        if let Ok(mut f) = self.foreground.lock() {
            *f = Some(child.id());
        }
        let status = child.wait();
        if let Ok(mut f) = self.foreground.lock() {
            *f = None;
        }
        status.with_context(|| format!("{} {}", program_name(&self.exe), args.join(" ")))
    }

    /// Runs `exe ARGS` to completion; its standard output, or its standard error as the error.
    pub fn output(&self, args: &[&str]) -> Result<String> {
        output(&self.exe, args, &[])
    }

    /// Marks the children as stopped on purpose (Ctrl-C), then stops them.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.stop_all();
    }

    /// Whether [`Procs::interrupt`] was called.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// SIGTERM to the foreground step and every server, then waits for each server.
    pub fn stop_all(&self) {
        if let Some(pid) = self.foreground.lock().ok().and_then(|f| *f) {
            terminate(pid);
        }
        let Ok(mut v) = self.servers.lock() else {
            return;
        };
        for c in v.iter() {
            terminate(c.id());
        }
        for mut c in v.drain(..) {
            let _ = c.wait();
        }
    }
}
