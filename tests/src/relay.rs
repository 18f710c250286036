//! A way from a simulated host to its cluster's API server: the test API
//! servers listen on the host's loopback, which a network namespace does
//! not share. A relay listens on 127.0.0.1 inside the namespace and copies
//! each connection to the API server, as a node's route to its control
//! plane would. Bytes are copied as they are (TLS end to end).

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::NetNs;

/// How long a relayed read may block before the relay checks whether it
/// must stop (so dropping it never waits on an idle connection for long).
const POLL: Duration = Duration::from_millis(200);

/// A relay into one namespace, stopped when dropped.
pub struct ApiRelay {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl ApiRelay {
    /// Listens on 127.0.0.1 in `ns` and forwards to `target` (on the host).
    pub fn start(ns: &NetNs, target: SocketAddr) -> Result<Self> {
        let listener = ns
            .enter(|| TcpListener::bind("127.0.0.1:0"))?
            .with_context(|| format!("listening in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inner, _)) => {
                        let _ = inner.set_nonblocking(false);
                        if let Ok(outer) = TcpStream::connect(target) {
                            pipe(&inner, &outer, stopped.clone());
                            pipe(&outer, &inner, stopped.clone());
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { port, stop })
    }

    /// Writes `kubeconfig` (whose server is `target`) as a kubeconfig for
    /// the namespace, pointing at the relay, to `path`.
    pub fn kubeconfig(&self, kubeconfig: &str, target: SocketAddr, path: &Path) -> Result<PathBuf> {
        let inside = kubeconfig.replace(&target.to_string(), &format!("127.0.0.1:{}", self.port));
        std::fs::write(path, inside).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_owned())
    }
}

impl Drop for ApiRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread until either side closes or the relay stops.
fn pipe(from: &TcpStream, to: &TcpStream, stop: Arc<AtomicBool>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let _ = from.set_read_timeout(Some(POLL));
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}
