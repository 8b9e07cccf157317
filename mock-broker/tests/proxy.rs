//! The test proxy on its own: it tunnels, asks for credentials, refuses, and stops accepting
//! when dropped. (transport-actor/tests/proxy.rs puts devices behind it.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use dps_mock_broker::proxy::{ProxyMode, ProxyRequest, TestProxy};

/// Sends a CONNECT to `target` (with `credentials` as Basic), returns the status line and the
/// stream.
fn connect(proxy: &TestProxy, target: &str, credentials: Option<&str>) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(c) = credentials {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(c);
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    (head.lines().next().unwrap_or_default().to_owned(), stream)
}

#[test]
fn it_tunnels_asks_for_credentials_refuses_and_stops_when_dropped() {
    // A service that echoes one line.
    let service = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = service.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in service.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).unwrap();
            stream.write_all(&buf).unwrap();
        }
    });

    let proxy = TestProxy::start(ProxyMode::RequireCredentials {
        user: "u".into(),
        password: "p".into(),
    })
    .unwrap();
    assert_eq!(
        proxy.url_with("u", "p"),
        format!("http://u:p@{}", proxy.addr())
    );
    assert_eq!(proxy.url(), format!("http://{}", proxy.addr()));
    let (status, _) = connect(&proxy, &target, None);
    assert_eq!(status, "HTTP/1.1 407 Proxy Authentication Required");
    let (status, mut tunnel) = connect(&proxy, &target, Some("u:p"));
    assert_eq!(status, "HTTP/1.1 200 Connection established");
    tunnel.write_all(b"hello").unwrap();
    let mut echoed = [0u8; 5];
    tunnel.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello");
    assert_eq!(
        proxy.requests(),
        vec![
            ProxyRequest {
                target: target.clone(),
                credentials: None,
                status: Some(407)
            },
            ProxyRequest {
                target: target.clone(),
                credentials: Some("u:p".into()),
                status: Some(200)
            },
        ]
    );

    let refusing = TestProxy::start(ProxyMode::Refuse {
        status: 502,
        reason: "Bad Gateway".into(),
    })
    .unwrap();
    assert_eq!(
        connect(&refusing, &target, None).0,
        "HTTP/1.1 502 Bad Gateway"
    );
    let addr = refusing.addr();
    drop(refusing);
    // Dropped, it takes no more requests: the connection is refused or closed unanswered.
    let answered = TcpStream::connect(addr).ok().and_then(|mut s| {
        s.write_all(b"CONNECT x:1 HTTP/1.1\r\n\r\n").ok()?;
        let mut byte = [0u8];
        (s.read(&mut byte).ok()? > 0).then_some(())
    });
    assert!(answered.is_none());
}

#[test]
fn only_connect_is_served_and_a_head_that_never_ends_is_cut_off() {
    let proxy = TestProxy::start(ProxyMode::Tunnel).unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed"),
        "{answer}"
    );

    // 8 KiB of header without an end: the proxy closes instead of reading forever.
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    let _ = stream.write_all(b"CONNECT x:1 HTTP/1.1\r\n");
    let _ = stream.write_all(&vec![b'a'; 9 * 1024]);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}
