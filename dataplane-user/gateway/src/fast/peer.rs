//! The one peer of a fast-path gateway: its WireGuard state machine(s), its
//! endpoint, and the rules for which packets it accepts.
//!
//! Key rotation is make-before-break. When the peer's key changes, a second
//! state machine for the new key is kept beside the current one (and tries
//! to handshake); whichever side then completes a handshake under the new
//! key promotes it, so the tunnel is down for at most one handshake.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime},
};

use defguard_boringtun::noise::{
    errors::WireGuardError, handshake::parse_handshake_anon, Packet, Tunn, TunnResult,
};

use super::first_handshake::{self, FirstHandshake};
use crate::{config::Cidr, PrivateKey, PublicKey};

/// One WireGuard state machine and the peer key it speaks to.
pub struct Session {
    pub tunn: Tunn,
    pub peer_key: PublicKey,
    /// Index prefix of our receiver indices (`Tunn` shifts it left by 8).
    pub index: u32,
    /// Quick retries of the first initiation, when we are the side that
    /// dials (inactive for a responder).
    pub first_handshake: FirstHandshake,
}

struct EarlyInit {
    key: PublicKey,
    from: SocketAddr,
    datagram: Vec<u8>,
    at: Instant,
}

/// Which session a received datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Current,
    Pending,
}

pub struct PeerState {
    pub own_key: PrivateKey,
    pub current: Session,
    pub pending: Option<Session>,
    pub endpoint: Option<SocketAddr>,
    pub allowed: Vec<Cidr>,
    pub keepalive: Option<u16>,
    next_index: u32,
    /// When we last answered an unknown session with a handshake of ours.
    last_unsolicited_handshake: Option<Instant>,
    /// The latest handshake initiation from a key we do not know yet: a
    /// peer that restarted with a new key may dial before its key reaches
    /// us; once it does, this initiation is answered at once instead of
    /// after the peer's 5 s retry.
    early_init: Option<EarlyInit>,
    early_init_checked: Option<Instant>,
    pub drops: BTreeMap<&'static str, u64>,
}

impl PeerState {
    pub fn new(
        own_key: PrivateKey,
        peer_key: PublicKey,
        endpoint: Option<SocketAddr>,
        allowed: Vec<Cidr>,
        keepalive: Option<u16>,
    ) -> Self {
        let mut current = new_session(&own_key, peer_key, keepalive, 1);
        // The dialling side starts the handshake at once instead of waiting
        // for the first packet, and retries it quickly until it completes.
        if endpoint.is_some() {
            current.first_handshake = FirstHandshake::starting_at(Instant::now());
        }
        PeerState {
            own_key,
            current,
            pending: None,
            endpoint,
            allowed,
            keepalive,
            next_index: 2,
            last_unsolicited_handshake: None,
            early_init: None,
            early_init_checked: None,
            drops: BTreeMap::new(),
        }
    }

    pub fn drop_packet(&mut self, reason: &'static str) {
        *self.drops.entry(reason).or_default() += 1;
    }

    pub fn allows(&self, source: IpAddr) -> bool {
        self.allowed.iter().any(|c| c.contains(source))
    }

    /// The peer's key changed: keep the current session and add one for
    /// the new key. Returns the datagrams to send: the answer to an
    /// initiation that came early under that key, else our own initiation.
    pub fn peer_key_changed(&mut self, key: PublicKey) -> Vec<(SocketAddr, Vec<u8>)> {
        if key == self.current.peer_key || self.pending.as_ref().is_some_and(|p| p.peer_key == key)
        {
            return Vec::new();
        }
        let index = self.next_index();
        let mut session = new_session(&self.own_key, key, self.keepalive, index);
        let mut scratch = [0u8; 256];
        let mut out = Vec::new();
        if let Some(early) = self
            .early_init
            .take()
            .filter(|e| e.key == key && e.at.elapsed() < Duration::from_secs(10))
        {
            if let TunnResult::WriteToNetwork(reply) =
                session
                    .tunn
                    .decapsulate(Some(early.from.ip()), &early.datagram, &mut scratch)
            {
                out.push((early.from, reply.to_vec()));
                self.endpoint = Some(early.from);
            }
        }
        if out.is_empty() {
            if let (TunnResult::WriteToNetwork(init), Some(to)) = (
                session
                    .tunn
                    .format_handshake_initiation(&mut scratch, false),
                self.endpoint,
            ) {
                out.push((to, init.to_vec()));
                session.first_handshake =
                    FirstHandshake::starting_at(Instant::now() + first_handshake::FIRST_DELAY);
            }
        }
        self.pending = Some(session);
        out
    }

    /// An initiation our sessions refused: remember it if it comes from a
    /// key we may learn soon. At most 20 a second are examined, since each
    /// costs a Diffie-Hellman.
    pub fn remember_unknown_init(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = Instant::now();
        if self
            .early_init_checked
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(50))
        {
            return;
        }
        self.early_init_checked = Some(now);
        let Ok(Packet::HandshakeInit(init)) = Tunn::parse_incoming_packet(datagram) else {
            return;
        };
        let public = x25519_dalek::PublicKey::from(self.own_key.secret());
        if let Ok(half) = parse_handshake_anon(self.own_key.secret(), &public, &init) {
            let key = PublicKey::from_bytes(half.peer_static_public);
            if key != self.current.peer_key {
                self.early_init = Some(EarlyInit {
                    key,
                    from,
                    datagram: datagram.to_vec(),
                    at: now,
                });
            }
        }
    }

    /// Our own key changed: every session now speaks with the new key and
    /// handshakes at once. Returns the initiation to send.
    pub fn own_key_changed<'a>(
        &mut self,
        key: PrivateKey,
        scratch: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        let public = x25519_dalek::PublicKey::from(key.secret());
        for session in std::iter::once(&mut self.current).chain(self.pending.as_mut()) {
            session
                .tunn
                .set_static_private(key.secret().clone(), public, None);
        }
        self.own_key = key;
        match self.current.tunn.format_handshake_initiation(scratch, true) {
            TunnResult::WriteToNetwork(p) => Some(p),
            _ => None,
        }
    }

    /// Finds the session a datagram from the network is for.
    pub fn target(&self, datagram: &[u8]) -> Result<Target, WireGuardError> {
        let Some(pending) = &self.pending else {
            return Ok(Target::Current);
        };
        let receiver = match Tunn::parse_incoming_packet(datagram)? {
            Packet::HandshakeInit(init) => {
                let public = x25519_dalek::PublicKey::from(self.own_key.secret());
                let half = parse_handshake_anon(self.own_key.secret(), &public, &init)?;
                return Ok(if half.peer_static_public == *pending.peer_key.as_bytes() {
                    Target::Pending
                } else {
                    Target::Current
                });
            }
            Packet::HandshakeResponse(r) => r.receiver_idx,
            Packet::PacketCookieReply(c) => c.receiver_idx,
            Packet::PacketData(d) => d.receiver_idx,
        };
        Ok(if receiver >> 8 == pending.index {
            Target::Pending
        } else {
            Target::Current
        })
    }

    pub fn session(&mut self, target: Target) -> &mut Tunn {
        match (target, self.pending.as_mut()) {
            (Target::Pending, Some(p)) => &mut p.tunn,
            _ => &mut self.current.tunn,
        }
    }

    /// A session for the new key works: it becomes the current one.
    pub fn promote(&mut self) {
        if let Some(pending) = self.pending.take() {
            tracing::info!(peer_key = %pending.peer_key, "the peer's new key is in use");
            self.current = pending;
        }
    }

    /// Whether to answer a datagram for a session we do not know (we
    /// restarted, the peer did not) with a handshake of our own, so the
    /// tunnel comes back in one round trip instead of the peer's timeout.
    /// At most once a second.
    pub fn should_answer_unknown_session(&mut self, now: Instant) -> bool {
        let fresh = self
            .current
            .tunn
            .time_since_last_handshake()
            .is_some_and(|age| age < Duration::from_secs(170));
        if fresh
            || self
                .last_unsolicited_handshake
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.last_unsolicited_handshake = Some(now);
        true
    }

    /// WireGuard's timers of every session (retries, rekeying, keepalives)
    /// and the quick first-handshake retries: the datagrams to send to the
    /// endpoint now. Called every [`super::TIMER_TICK`].
    pub fn on_timer(&mut self, now: Instant, scratch: &mut [u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let dialable = self.endpoint.is_some();
        for session in std::iter::once(&mut self.current).chain(self.pending.as_mut()) {
            let protocol = match session.tunn.update_timers(scratch) {
                TunnResult::WriteToNetwork(p) => {
                    out.push(p.to_vec());
                    true
                }
                _ => false,
            };
            if session.tunn.time_since_last_handshake().is_some() {
                session.first_handshake.finish();
                continue;
            }
            // Without a session, what the protocol's timers wrote is an
            // initiation already; the quick schedule waits for the next tick.
            if dialable && !protocol && session.first_handshake.due(now) {
                if let TunnResult::WriteToNetwork(init) =
                    session.tunn.format_handshake_initiation(scratch, true)
                {
                    tracing::debug!(
                        attempt = session.first_handshake.sent(),
                        peer_key = %session.peer_key,
                        "first handshake: sending an initiation"
                    );
                    out.push(init.to_vec());
                }
            }
        }
        out
    }

    pub fn last_handshake(&self) -> Option<SystemTime> {
        self.current
            .tunn
            .time_since_last_handshake()
            .and_then(|age| SystemTime::now().checked_sub(age))
    }

    fn next_index(&mut self) -> u32 {
        let i = self.next_index;
        // 24 bits of index prefix; wraps long after any peer stops rotating.
        self.next_index = (self.next_index + 1) & 0x00ff_ffff;
        i
    }
}

fn new_session(own: &PrivateKey, peer: PublicKey, keepalive: Option<u16>, index: u32) -> Session {
    Session {
        tunn: Tunn::new(
            own.secret().clone(),
            peer.to_dalek(),
            None,
            keepalive,
            index,
            None,
        ),
        peer_key: peer,
        index,
        first_handshake: FirstHandshake::inactive(),
    }
}

/// A stable label for a refused datagram.
pub fn drop_reason(e: &WireGuardError) -> &'static str {
    match e {
        WireGuardError::DestinationBufferTooSmall => "buffer_too_small",
        WireGuardError::IncorrectPacketLength => "bad_length",
        WireGuardError::UnexpectedPacket | WireGuardError::WrongPacketType => "bad_type",
        WireGuardError::WrongIndex | WireGuardError::NoCurrentSession => "unknown_session",
        WireGuardError::WrongKey | WireGuardError::InvalidMac | WireGuardError::InvalidAeadTag => {
            "bad_authentication"
        }
        WireGuardError::WrongTai64nTimestamp => "replayed_handshake",
        WireGuardError::InvalidCounter | WireGuardError::DuplicateCounter => "replayed_data",
        WireGuardError::InvalidPacket => "malformed",
        WireGuardError::ConnectionExpired => "expired",
        WireGuardError::UnderLoad => "under_load",
        WireGuardError::LockFailed => "internal",
    }
}
