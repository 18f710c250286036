//! The outer UDP socket: dual-stack, UDP GSO on send (one system call for a
//! run of equal-sized datagrams), UDP GRO and recvmmsg on receive.

use std::{
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6},
    os::fd::{AsRawFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
};

use socket2::{Domain, SockAddr, Socket, Type};

/// The kernel's limit on segments in one UDP GSO send (UDP_MAX_SEGMENTS on
/// older kernels).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest coalesced datagram UDP GRO hands over.
const GRO_BUFFER: usize = 65_535;

/// Shared by the encrypting and decrypting threads without a lock: the
/// socket calls are thread-safe and the GSO switch is atomic.
pub struct UdpIo {
    socket: Socket,
    gso: AtomicBool,
}

impl UdpIo {
    /// Binds `[::]:port` for both families.
    pub fn bind(port: u16) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, None)?;
        socket.set_only_v6(false)?;
        socket.set_nonblocking(true)?;
        // Bursts of a fast sender must not overflow the default buffers;
        // FORCE variants need CAP_NET_ADMIN, which the gateway has anyway.
        for (name, size) in [
            (libc::SO_RCVBUFFORCE, 8 << 20),
            (libc::SO_SNDBUFFORCE, 8 << 20),
        ] {
            let _ = setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, name, size);
        }
        socket.bind(&SockAddr::from(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port,
        )))?;
        let gro = setsockopt(socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        if !gro {
            tracing::warn!("UDP GRO unavailable: receiving one datagram per buffer");
        }
        Ok(UdpIo {
            socket,
            gso: AtomicBool::new(true),
        })
    }

    pub fn local_port(&self) -> Option<u16> {
        self.socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Sends `data`, a run of datagrams of `segment` bytes each (the last may
    /// be shorter), to `to`: one system call with UDP GSO where supported.
    pub fn send_run(&self, to: SocketAddr, data: &[u8], segment: usize) -> io::Result<()> {
        if data.len() <= segment || !self.gso.load(Ordering::Relaxed) {
            for chunk in data.chunks(segment.max(1)) {
                self.send_one(to, chunk, None)?;
            }
            return Ok(());
        }
        match self.send_one(to, data, Some(segment as u16)) {
            // Without GSO support (old kernel, device without checksum
            // offload) fall back for good.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                tracing::warn!(error = %e, "UDP GSO refused; sending datagrams one by one");
                self.gso.store(false, Ordering::Relaxed);
                self.send_run(to, data, segment)
            }
            other => other,
        }
    }

    fn send_one(&self, to: SocketAddr, data: &[u8], gso: Option<u16>) -> io::Result<()> {
        let addr = SockAddr::from(dual_stack(to));
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // Room for one cmsg carrying a u16, 8-byte aligned.
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        if let Some(segment) = gso {
            msg.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            // SAFETY: the control buffer is 32 bytes, more than CMSG_SPACE(2),
            // so the first header and its data lie inside it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
            }
        }
        loop {
            // SAFETY: msg points at live buffers for the duration of the call.
            let rc = unsafe { libc::sendmsg(self.socket.as_raw_fd(), &msg, 0) };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // A full socket buffer: wait until it drains a little.
                Some(libc::EAGAIN) => {
                    poll(self.socket.as_raw_fd(), libc::POLLOUT, 100)?;
                }
                _ => return Err(err),
            }
        }
    }
}

/// A batch of received datagrams, each possibly a GRO run of equal segments.
pub struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; 8]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    count: usize,
}

/// One received datagram (or GRO run).
pub struct Received<'a> {
    pub from: SocketAddr,
    pub data: &'a [u8],
    /// Size of each coalesced datagram in `data` (the last may be shorter).
    pub segment: usize,
}

impl RecvBatch {
    pub fn new(size: usize) -> Self {
        RecvBatch {
            buffers: (0..size).map(|_| vec![0; GRO_BUFFER]).collect(),
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            names: (0..size).map(|_| unsafe { std::mem::zeroed() }).collect(),
            controls: vec![[0; 8]; size],
            iovecs: Vec::with_capacity(size),
            headers: Vec::with_capacity(size),
            count: 0,
        }
    }

    /// One recvmmsg; Ok(0) when nothing is waiting.
    pub fn recv(&mut self, io: &UdpIo) -> io::Result<usize> {
        self.iovecs.clear();
        self.headers.clear();
        for buf in &mut self.buffers {
            self.iovecs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
        }
        for i in 0..self.buffers.len() {
            // SAFETY: mmsghdr is plain data; the pointers set below point
            // into vectors that are not resized until the call returns.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &raw mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = std::mem::size_of::<[u64; 8]>();
            self.headers.push(h);
        }
        // SAFETY: headers, iovecs, names and controls are live and sized as declared.
        let rc = unsafe {
            libc::recvmmsg(
                io.socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            self.count = 0;
            return match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(err),
            };
        }
        self.count = rc as usize;
        Ok(self.count)
    }

    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.count {
            return None;
        }
        let h = &self.headers[i];
        let len = h.msg_len as usize;
        let from = sockaddr_to_socket(&self.names[i])?;
        let mut segment = len;
        // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG
        // macros walk only within them.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>());
                    if size > 0 {
                        segment = usize::from(size);
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&h.msg_hdr, cmsg);
            }
        }
        Some(Received {
            from,
            data: self.buffers[i].get(..len)?,
            segment,
        })
    }
}

/// IPv4 peers are reached through the dual-stack socket as v4-mapped.
fn dual_stack(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    }
}

fn sockaddr_to_socket(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let socket = match i32::from(storage.ss_family) {
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and
            // sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>()) };
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            )
        }
        libc::AF_INET => {
            // SAFETY: as above, for sockaddr_in.
            let a = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in>()) };
            SocketAddr::new(
                IpAddr::V4(u32::from_be(a.sin_addr.s_addr).into()),
                u16::from_be(a.sin_port),
            )
        }
        _ => return None,
    };
    // v4-mapped back to plain IPv4, so endpoints print and compare naturally.
    Some(SocketAddr::new(socket.ip().to_canonical(), socket.port()))
}

fn setsockopt(fd: RawFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a c_int we own and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits up to `timeout_ms` for `events` on `fd`; true when ready.
pub fn poll(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one pollfd we own.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
    match rc {
        r if r > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}
