//! Bounded test traffic between namespaces.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::netns::{Error, NetNs};

/// How long a receiver waits for the next datagram before giving up.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `count` UDP datagrams of `payload` bytes from `from` to `to` (an
/// address inside `to_ns`, where a receiver is bound first) and returns how
/// many arrived. Bounded in count and time: it never waits more than
/// `RECV_TIMEOUT` for a datagram.
pub fn udp_burst(
    from: &NetNs,
    to_ns: &NetNs,
    to: SocketAddr,
    count: usize,
    payload: usize,
) -> Result<usize, Error> {
    let receiver = to_ns.enter(|| UdpSocket::bind(to))?.map_err(io(to_ns))?;
    receiver
        .set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(io(to_ns))?;
    let unspecified: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|e: std::net::AddrParseError| Error::Command {
            command: "parse".into(),
            detail: e.to_string(),
        })?;
    let sender = from
        .enter(|| UdpSocket::bind(unspecified))?
        .map_err(io(from))?;
    let data = vec![0x5a; payload];
    for _ in 0..count {
        sender.send_to(&data, to).map_err(io(from))?;
    }
    let mut buf = vec![0; payload + 1];
    let mut received = 0;
    while received < count {
        match receiver.recv_from(&mut buf) {
            Ok((len, _)) if len == payload => received += 1,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(io(to_ns)(e)),
        }
    }
    Ok(received)
}

fn io(ns: &NetNs) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Enter {
        name: ns.name().to_owned(),
        source,
    }
}
