//! ICMP errors as a UDP socket sees them: the tests send datagrams that a
//! router must answer with an ICMP error (time exceeded, too big) and read
//! what the kernel queued on the socket (IP_RECVERR / IPV6_RECVERR).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    os::fd::AsRawFd as _,
};

/// An ICMP error as a socket's error queue reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// Who sent it.
    pub from: IpAddr,
    /// ICMP type and code.
    pub kind: (u8, u8),
    /// The MTU of a too-big error.
    pub info: u32,
}

/// Sets an integer socket option (`setsockopt(level, name, value)`).
pub fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads an int we own for the length we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ICMP error queued on `socket`, which must have IP_RECVERR (IPv4) or
/// IPV6_RECVERR on.
pub fn last_icmp_error(socket: &UdpSocket, ipv4: bool) -> io::Result<IcmpError> {
    let (level, kind, origin) = if ipv4 {
        (libc::IPPROTO_IP, libc::IP_RECVERR, libc::SO_EE_ORIGIN_ICMP)
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVERR,
            libc::SO_EE_ORIGIN_ICMP6,
        )
    };
    let mut data = [0u8; 2048];
    let mut control = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below are to
    // buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: recvmsg writes only into the buffers described by `msg`.
    let rc = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled,
    // bounded by msg_controllen; each header is checked before its data is read.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == level && (*cmsg).cmsg_type == kind {
                let ee = libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err;
                let ee = std::ptr::read_unaligned(ee);
                if ee.ee_origin != origin {
                    return Err(io::Error::other(format!(
                        "a queued error of origin {}, not ICMP",
                        ee.ee_origin
                    )));
                }
                // The offender's address follows the extended error.
                let offender =
                    libc::CMSG_DATA(cmsg).add(std::mem::size_of::<libc::sock_extended_err>());
                let from = if ipv4 {
                    let sin = std::ptr::read_unaligned(offender as *const libc::sockaddr_in);
                    IpAddr::from(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                } else {
                    let sin6 = std::ptr::read_unaligned(offender as *const libc::sockaddr_in6);
                    IpAddr::from(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                };
                return Ok(IcmpError {
                    from,
                    kind: (ee.ee_type, ee.ee_code),
                    info: ee.ee_info,
                });
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Err(io::Error::other("no RECVERR message in the error queue"))
}
