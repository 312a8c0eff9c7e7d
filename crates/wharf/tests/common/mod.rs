//! The real `wharf` binary started on ephemeral ports over a data
//! directory, for tests that need a whole process (crashes, signals, the
//! admin port).

#![allow(dead_code)]

pub mod docs;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub struct Wharf {
    pub child: Child,
    /// `http://ip:port` of the registry listener.
    pub base: String,
    /// `http://ip:port` of the admin port.
    pub admin: String,
}

impl Wharf {
    pub fn start(data: &Path) -> Wharf {
        Wharf::start_with(data, &[])
    }

    /// Starts `wharf serve` with `extra` flags and waits until both of its
    /// listeners are bound.
    pub fn start_with(data: &Path, extra: &[&str]) -> Wharf {
        Wharf::start_logging(data, extra, None)
    }

    /// [`Wharf::start_with`], its log (stderr) written to `log` when given.
    pub fn start_logging(data: &Path, extra: &[&str], log: Option<&Path>) -> Wharf {
        std::fs::create_dir_all(data).unwrap();
        let addr_file = data.join("addr");
        let admin_file = data.join("admin-addr");
        let _ = std::fs::remove_file(&addr_file);
        let _ = std::fs::remove_file(&admin_file);
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--log", "warn"])
            .arg("--data-dir")
            .arg(data)
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--admin-addr-file")
            .arg(&admin_file)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(match log {
                Some(path) => {
                    Stdio::from(std::fs::File::create(path).expect("create the log file"))
                }
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("start wharf");
        let deadline = Instant::now() + Duration::from_secs(20);
        let read = |f: &Path| std::fs::read_to_string(f).ok();
        let (addr, admin) = loop {
            if let (Some(a), Some(b)) = (read(&addr_file), read(&admin_file)) {
                break (a, b);
            }
            assert!(Instant::now() < deadline, "wharf did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Wharf {
            child,
            base: format!("http://{addr}"),
            admin: format!("http://{admin}"),
        }
    }

    /// SIGKILL: no chance to flush or clean up anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: the graceful path.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// `len` pseudo-random bytes (xorshift), different for each `seed`.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
