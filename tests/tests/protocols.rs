//! Protocols through the real gateway: WebSocket (HTTP/1.1 Upgrade).

use std::net::SocketAddr;

use bowline_tests::{Echo, HttpClient, Stack, free_port, one_route};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_echoes_through_the_gateway() {
    let echo = Echo::start("ws").unwrap();
    let gw_port = free_port();
    let _stack = Stack::start(&one_route(gw_port, echo.port()), "edge/gw").await;
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();

    let stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("ws://shop.example:{gw_port}/chat"), stream)
            .await
            .expect("the WebSocket handshake goes through the gateway");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["x-echo-name"], "ws");
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("ws: hello {i}")));
    }
    ws.close(None).await.unwrap();

    // Plain requests on the same listener still work.
    let r = HttpClient::http1()
        .get(gw, "shop.example", "/", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}
