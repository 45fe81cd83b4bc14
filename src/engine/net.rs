//! UDP sockets with kernel receive timestamps (SO_TIMESTAMPNS), so T2 on
//! the server and T4 on the client are taken when the packet reached the
//! host, not when our task got round to reading it. Safe code only: nix
//! wraps the control-message parsing.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage,
    recvmmsg, recvmsg, sendmmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::discipline::LocalClock;
use super::proto::NtpTimestamp;

/// The kernel's receive timestamp (SO_TIMESTAMPNS) among a message's
/// control messages, if it is there.
fn kernel_timestamp(cmsgs: impl Iterator<Item = ControlMessageOwned>) -> Option<NtpTimestamp> {
    cmsgs.fold(None, |found, c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => {
            Some(NtpTimestamp::from_unix(ts.tv_sec(), ts.tv_nsec() as u32))
        }
        _ => found,
    })
}

/// Room for one SCM_TIMESTAMPNS control message (CMSG_SPACE(16) = 32).
const CMSG_BUFFER_LEN: usize = 64;
const _: () = assert!(nix::sys::socket::cmsg_space::<TimeSpec>() <= CMSG_BUFFER_LEN);

#[repr(align(8))]
struct CmsgBuffer([u8; CMSG_BUFFER_LEN]);

/// A datagram and when it arrived.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// Local time of arrival: the kernel's timestamp when available, else
    /// the clock read right after the read returned.
    pub at: NtpTimestamp,
    pub kernel_timestamp: bool,
}

pub struct TimestampedSocket {
    socket: UdpSocket,
}

impl TimestampedSocket {
    /// Binds and asks the kernel for receive timestamps (best effort: where
    /// unsupported we fall back to reading the clock).
    /// IPv6 sockets are IPv6-only, so `0.0.0.0:123` and `[::]:123` can be
    /// bound side by side.
    pub async fn bind(addr: SocketAddr) -> io::Result<TimestampedSocket> {
        let fd = bound_socket(addr, nix::sys::socket::SockType::Datagram, false)?;
        let _ = setsockopt(&fd, sockopt::ReceiveTimestampns, &true);
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        Ok(TimestampedSocket { socket })
    }

    pub async fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        self.socket.connect(peer).await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.socket.send(buf).await
    }

    pub async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(buf, to).await
    }

    pub async fn recv(
        &self,
        buf: &mut [u8],
        clock: &(dyn LocalClock + Sync),
    ) -> io::Result<Received> {
        let fd = self.socket.as_raw_fd();
        let (len, from, kernel) = self
            .socket
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                // On the stack (no allocation per packet), aligned for cmsghdr.
                let mut cmsg = CmsgBuffer([0; CMSG_BUFFER_LEN]);
                let msg = recvmsg::<SockaddrStorage>(
                    fd,
                    &mut iov,
                    Some(&mut cmsg.0),
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)?;
                let kernel = msg.cmsgs().ok().and_then(kernel_timestamp);
                let from = msg.address.as_ref().and_then(to_socket_addr);
                Ok((msg.bytes, from, kernel))
            })
            .await?;
        let from = from.ok_or_else(|| io::Error::other("datagram without a source address"))?;
        Ok(Received {
            len,
            from,
            at: kernel.unwrap_or_else(|| clock.now()),
            kernel_timestamp: kernel.is_some(),
        })
    }
}

/// Datagrams read at most per `recv_batch` (recvmmsg).
pub const BATCH: usize = 32;
/// Bytes kept of each datagram in a batch (longer ones are truncated, and
/// the decoder rejects them as malformed): an Ethernet MTU's UDP payload,
/// room for an NTS request with a cookie and seven placeholders.
const BATCH_BUF: usize = 1472;

/// Buffers for `recv_batch`, reused between calls.
pub struct RecvBatch {
    bufs: Vec<[u8; BATCH_BUF]>,
    /// What the last call received; `data(i)` is its payload.
    pub received: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; BATCH_BUF]; BATCH],
            received: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    pub fn data(&self, i: usize) -> &[u8] {
        let len = self.received.get(i).map_or(0, |r| r.len.min(BATCH_BUF));
        &self.bufs[i][..len]
    }
}

impl TimestampedSocket {
    /// Waits for datagrams and reads up to `BATCH` of them with one
    /// recvmmsg call (the server's path: one syscall for many requests).
    pub async fn recv_batch(
        &self,
        batch: &mut RecvBatch,
        clock: &(dyn LocalClock + Sync),
    ) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let RecvBatch { bufs, received } = batch;
        received.clear();
        let mut raw: Vec<(usize, Option<SocketAddr>, Option<NtpTimestamp>)> =
            Vec::with_capacity(BATCH);
        self.socket
            .async_io(Interest::READABLE, || {
                raw.clear();
                let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                    BATCH,
                    Some(nix::cmsg_space!(TimeSpec)),
                );
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(&mut b[..])])
                    .collect();
                let results = recvmmsg(
                    fd,
                    &mut headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(io::Error::from)?;
                for msg in results {
                    let kernel = msg.cmsgs().ok().and_then(kernel_timestamp);
                    let from = msg.address.as_ref().and_then(to_socket_addr);
                    raw.push((msg.bytes, from, kernel));
                }
                Ok(())
            })
            .await?;
        let fallback = clock.now();
        for (len, from, kernel) in raw {
            // A datagram without an address cannot be answered; keep the
            // slot (indices match the buffers) with an unspecified source.
            let from = from.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            received.push(Received {
                len,
                from,
                at: kernel.unwrap_or(fallback),
                kernel_timestamp: kernel.is_some(),
            });
        }
        Ok(())
    }

    /// Sends replies, as many as possible with one sendmmsg call, the rest
    /// one by one.
    pub async fn send_batch<B: AsRef<[u8]>>(&self, replies: &[(B, SocketAddr)]) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let mut sent = 0;
        if replies.len() > 1 {
            sent = self
                .socket
                .try_io(Interest::WRITABLE, || {
                    let mut headers =
                        MultiHeaders::<SockaddrStorage>::preallocate(replies.len(), None);
                    let iovs: Vec<[IoSlice<'_>; 1]> = replies
                        .iter()
                        .map(|(b, _)| [IoSlice::new(b.as_ref())])
                        .collect();
                    let addrs: Vec<Option<SockaddrStorage>> = replies
                        .iter()
                        .map(|(_, a)| Some(SockaddrStorage::from(*a)))
                        .collect();
                    let none: [ControlMessage<'_>; 0] = [];
                    let results = sendmmsg(
                        fd,
                        &mut headers,
                        iovs.iter(),
                        addrs,
                        none,
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map_err(io::Error::from)?;
                    Ok(results.count())
                })
                .unwrap_or(0);
        }
        for (bytes, to) in &replies[sent..] {
            self.socket.send_to(bytes.as_ref(), *to).await?;
        }
        Ok(())
    }
}

/// A non-blocking, close-on-exec socket of `kind` bound to `addr`; an IPv6
/// one is IPv6-only, so `0.0.0.0:PORT` and `[::]:PORT` can be bound side by
/// side. `reuse_addr` sets SO_REUSEADDR before binding (listeners).
pub fn bound_socket(
    addr: SocketAddr,
    kind: nix::sys::socket::SockType,
    reuse_addr: bool,
) -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockaddrIn, SockaddrIn6, bind, socket};
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(
        family,
        kind,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if reuse_addr {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    match addr {
        SocketAddr::V6(v6) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
        }
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
    }
    Ok(fd)
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        let ip = v6.ip();
        // Report v4-mapped clients as IPv4 so allow/deny by IPv4 CIDR works.
        let ip = ip
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(ip));
        return Some(SocketAddr::new(ip, v6.port()));
    }
    let _ = s.family();
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::clock::SystemClock;

    #[tokio::test]
    async fn loopback_datagram_has_kernel_timestamp() {
        let a = TimestampedSocket::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let b = TimestampedSocket::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let before = SystemClock.now();
        b.send_to(b"hello", a.local_addr().expect("addr"))
            .await
            .expect("send");
        let mut buf = [0u8; 64];
        let r = a.recv(&mut buf, &SystemClock).await.expect("recv");
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.from, b.local_addr().expect("addr"));
        assert!(r.kernel_timestamp, "Linux gives SO_TIMESTAMPNS on loopback");
        let after = SystemClock.now();
        assert!(r.at.diff_seconds(before) >= -1e-3 && after.diff_seconds(r.at) >= -1e-3);
    }

    #[tokio::test]
    async fn batches_are_received_and_answered_together() {
        let server = TimestampedSocket::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let to = server.local_addr().expect("addr");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for i in 0..5u8 {
            a.send_to(&[i; 48], to).expect("send");
        }
        b.send_to(&[9; 60], to).expect("send");
        let mut batch = RecvBatch::default();
        let mut seen = Vec::new();
        while seen.len() < 6 {
            server
                .recv_batch(&mut batch, &SystemClock)
                .await
                .expect("recv");
            for (i, r) in batch.received.iter().enumerate() {
                assert!(r.kernel_timestamp);
                seen.push((batch.data(i).to_vec(), r.from));
            }
        }
        assert_eq!(seen[0], (vec![0u8; 48], a.local_addr().expect("addr")));
        assert_eq!(seen[5], (vec![9u8; 60], b.local_addr().expect("addr")));
        let replies: Vec<([u8; 48], SocketAddr)> = seen
            .iter()
            .map(|(d, from)| ([d[0].wrapping_add(1); 48], *from))
            .collect();
        server.send_batch(&replies).await.expect("send");
        a.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let n = a.recv(&mut buf).expect("reply to a");
            assert_eq!(&buf[..n], &[i + 1; 48]);
        }
        let n = b.recv(&mut buf).expect("reply to b");
        assert_eq!(&buf[..n], &[10u8; 48]);
    }
}
