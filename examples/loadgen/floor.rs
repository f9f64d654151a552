//! The floor: a minimal UDP responder that answers a REGISTER with canned bytes, so the
//! side-by-side table shows what the socket I/O alone costs on this machine. It copies only
//! what a client needs to match the answer (Via, From, To, Call-ID, CSeq) and answers 401
//! with a fixed challenge, or 200 when the request carries an Authorization header. It checks
//! nothing and stores nothing.

use std::net::{SocketAddr, UdpSocket};

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct FloorArgs {
    #[arg(long, default_value = "127.0.0.1:5090")]
    pub(crate) listen: SocketAddr,
    /// Receive loops on the socket (threads).
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
}

const CHALLENGE: &[u8] = b"WWW-Authenticate: Digest realm=\"bench.test\", nonce=\"00000000floor00000000\", qop=\"auth\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n";
const OK_TAIL: &[u8] = b"Expires: 3600\r\nContent-Length: 0\r\n\r\n";

pub(crate) fn run(args: &FloorArgs) -> std::io::Result<()> {
    let sock = bind(args.listen)?;
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let sock = sock.try_clone().expect("clone socket");
            std::thread::spawn(move || serve(&sock))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A socket with a 4 MiB receive buffer, as sipward's default `sip.udp_recv_buffer_bytes`.
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn serve(sock: &UdpSocket) {
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(2048);
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let msg = &buf[..n];
        let head_end = memchr::memmem::find(msg, b"\r\n\r\n").unwrap_or(n);
        let head = &msg[..head_end];
        let authorized = memchr::memmem::find(head, b"\r\nAuthorization:").is_some();
        out.clear();
        out.extend_from_slice(if authorized {
            b"SIP/2.0 200 OK\r\n"
        } else {
            b"SIP/2.0 401 Unauthorized\r\n"
        });
        for line in head.split(|b| *b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let copy = [
                &b"Via:"[..],
                b"From:",
                b"To:",
                b"Call-ID:",
                b"CSeq:",
                b"Contact:",
            ]
            .iter()
            .any(|h| line.len() >= h.len() && line[..h.len()].eq_ignore_ascii_case(h));
            let contact = line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"Contact:");
            if copy && (authorized || !contact) {
                out.extend_from_slice(line);
                if line.len() >= 3 && line[..3].eq_ignore_ascii_case(b"To:") {
                    out.extend_from_slice(b";tag=floor");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(if authorized { OK_TAIL } else { CHALLENGE });
        let _ = sock.send_to(&out, peer);
    }
}
