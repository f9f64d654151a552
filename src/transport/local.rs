//! Our own addresses on a socket bound to a wildcard address (`0.0.0.0`, `[::]`): the address
//! a datagram arrived on (`IP_PKTINFO` / `IPV6_RECVPKTINFO`), a reply sent from that same
//! address (RFC 3581 §4), the address a datagram to a destination leaves from (the kernel's
//! route lookup, as Kamailio's `mhomed` does), and the host's interface addresses (which of
//! them a Route may name). Through `nix`'s safe wrappers; no `unsafe` here.
//!
//! It must not interpret what it carries: bytes in, bytes out.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};

/// Where a datagram arrived: the destination address in its IP header, and the interface
/// (needed to answer from an IPv6 link-local address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub ip: IpAddr,
    ifindex: u32,
}

impl Arrival {
    /// Our address `ip`, on whatever interface the kernel's route picks (for a reply sent
    /// later, when the interface is no longer known; a link-local IPv6 source needs it).
    pub fn at(ip: IpAddr) -> Arrival {
        Arrival { ip, ifindex: 0 }
    }
}

/// Asks the kernel to report each datagram's destination address on `socket`.
pub fn report_arrival(socket: &UdpSocket, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?;
    } else {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?;
    }
    Ok(())
}

/// Room for the packet information of one datagram (IPv4 or IPv6), allocated once per
/// receive thread.
pub fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!(libc::in6_pktinfo)
}

/// Receives one datagram into `buf`: its length, its source, and where it arrived (`None`
/// when the kernel sent no packet information). `control` comes from [`control_buffer`].
pub fn recv_with_arrival(
    socket: &UdpSocket,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Arrival>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let peer = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no source address"))?;
    let mut arrival = None;
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                // The header's destination, unless it was a broadcast or multicast one: then
                // the interface's own address (ipi_spec_dst), which a reply can leave from
                // and a Record-Route can name.
                let header = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                let own = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                let ours = match header.is_broadcast() || header.is_multicast() {
                    true => own,
                    false => header,
                };
                arrival = Some(Arrival {
                    ip: IpAddr::V4(ours),
                    ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                });
            }
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                arrival = Some(Arrival {
                    ip: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    ifindex: info.ipi6_ifindex,
                });
            }
            _ => {}
        }
    }
    Ok((msg.bytes, peer, arrival))
}

/// Sends `bytes` to `to` from the address the request arrived on (RFC 3581 §4: a response
/// leaves from the address its request came to), without waiting when `nowait`.
pub fn send_from(
    socket: &UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
    from: Arrival,
    nowait: bool,
) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let dest = SockaddrStorage::from(to);
    let flags = if nowait {
        MsgFlags::MSG_DONTWAIT
    } else {
        MsgFlags::empty()
    };
    let fd = socket.as_raw_fd();
    let sent = match from.ip {
        IpAddr::V4(ip) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                flags,
                Some(&dest),
            )
        }
        IpAddr::V6(ip) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: from.ifindex,
            };
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                flags,
                Some(&dest),
            )
        }
    };
    Ok(sent?)
}

/// The source address the kernel picks for a datagram to `dest` from an unconnected socket
/// (its route lookup): a UDP socket connected to `dest` is asked for its local address; no
/// packet is sent. `None` when there is no route.
pub fn source_for(dest: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match dest {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = UdpSocket::bind(any).ok()?;
    probe.connect(dest).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

/// The host's interface addresses now (for which addresses a wildcard listener answers to).
/// Empty if the kernel cannot list them.
pub fn interface_addresses() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = list
        .filter_map(|i| i.address.as_ref().and_then(socket_addr))
        .map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    storage.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// On a socket bound to 0.0.0.0, a datagram sent to 127.0.0.2 reports 127.0.0.2, and the
    /// reply sent from it arrives from 127.0.0.2 (not the kernel's default 127.0.0.1).
    #[test]
    fn a_wildcard_socket_learns_and_answers_from_the_arrival_address() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        report_arrival(&server, false).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"ping", ("127.0.0.2", port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, peer, arrival) =
            recv_with_arrival(&server, &mut buf, &mut control_buffer()).unwrap();
        assert_eq!(
            (&buf[..n], peer),
            (&b"ping"[..], client.local_addr().unwrap())
        );
        let arrival = arrival.expect("packet information");
        assert_eq!(arrival.ip, "127.0.0.2".parse::<IpAddr>().unwrap());
        send_from(&server, b"pong", peer, arrival, false).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 2], port)));
    }

    #[test]
    fn an_ipv6_wildcard_socket_reports_its_arrival_address() {
        let server = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        server.set_only_v6(true).unwrap();
        server
            .bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())
            .unwrap();
        let server: UdpSocket = server.into();
        report_arrival(&server, true).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.send_to(b"ping", ("::1", port)).unwrap();
        let mut buf = [0u8; 64];
        let (_, peer, arrival) =
            recv_with_arrival(&server, &mut buf, &mut control_buffer()).unwrap();
        assert_eq!(arrival.map(|a| a.ip), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        send_from(&server, b"pong", peer, arrival.unwrap(), false).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (_, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn the_route_source_and_the_interface_addresses_include_loopback() {
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(source_for(dest), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(interface_addresses().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
