//! A real OpenSSH server for tests, on 127.0.0.1 only: a free port, a throwaway host key
//! and user key made by `ssh-keygen` in a private temp dir, an `authorized_keys`, and a
//! `known_hosts` naming `127.0.0.1` and `localhost` on that port, so host key checking
//! stays on (`StrictHostKeyChecking=yes`). Dropping it kills sshd and removes the dir,
//! also when the test panics. Used by tests/remote.rs and benches/pool.rs.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// `SetEnv SHLVL=1`: Debian's bash sources ~/.bashrc for a command run by sshd only at
// shell level 1; this machine's root ~/.bashrc runs `pyenv init` (about 0.25 s of CPU
// per session), a cost of the account, not of toolpool. With SHLVL=1 in the session
// environment the login shell skips it, as on a host whose rc files are light.

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub dir: PathBuf,
    pub port: u16,
    child: Child,
}

/// True when an sshd binary is installed.
pub fn available() -> bool {
    Path::new(SSHD).exists() && Command::new("ssh-keygen").arg("-?").output().is_ok()
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "toolpool-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success(), "ssh-keygen failed for {}", path.display());
}

impl Sshd {
    /// Start sshd; panics with the way to install it when it is missing.
    pub fn start() -> Sshd {
        assert!(
            available(),
            "{SSHD} is missing: `apt-get install -y openssh-server` (make test installs it)"
        );
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("toolpool-sshd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // privilege separation needs it (Debian creates it at boot, containers may not)
        let _ = std::fs::create_dir_all("/run/sshd");
        keygen(&dir.join("host_key"));
        keygen(&dir.join("user_key"));
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        for attempt in 0..5 {
            let port = free_port();
            std::fs::write(
                dir.join("known_hosts"),
                format!(
                    "[127.0.0.1]:{port},[localhost]:{port} {} {}\n",
                    host_pub[0], host_pub[1]
                ),
            )
            .unwrap();
            std::fs::write(
                dir.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                     MaxStartups 100:30:200\nLogLevel ERROR\nSetEnv SHLVL=1\n",
                    d = dir.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("sshd starts");
            let mut me = Sshd {
                dir: dir.clone(),
                port,
                child,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return me;
                }
                if let Ok(Some(_)) = me.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
            eprintln!("sshd attempt {attempt} on port {port} failed: {log}");
            let _ = me.child.kill();
            let _ = me.child.wait();
            std::mem::forget(me); // keep the dir for the next attempt
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("sshd did not start on 127.0.0.1");
    }

    /// ssh options that reach this server with strict host key checking.
    pub fn options(&self) -> Vec<String> {
        [
            "-F".to_string(),
            "/dev/null".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.dir.join("user_key").display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
        ]
        .to_vec()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
