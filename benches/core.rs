//! Micro benchmarks of the protocol core: what one message costs in framing
//! and state transitions, with no sockets involved. Run with `cargo bench
//! --bench core`. The end-to-end comparison with other servers is
//! benches/compare.py.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use greeter::protocol::{
    ClientSession, Framing, Input, NameTerminator, ServerSession, SessionLimits,
};

fn greeted_server(framing: Framing) -> ServerSession {
    let mut session = ServerSession::new(SessionLimits {
        framing,
        ..SessionLimits::default()
    });
    session.greet(&mut Vec::new());
    session
}

fn server_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("server");
    group.throughput(Throughput::Elements(1));

    let mut session = greeted_server(Framing::Line);
    let mut out = Vec::with_capacity(256);
    group.bench_function("one name line", |b| {
        b.iter(|| {
            out.clear();
            session.receive(Input::Bytes(black_box(b"Michael\n")), &mut out);
            black_box(out.len())
        })
    });

    let mut session = greeted_server(Framing::Auto);
    group.bench_function("one bare name and a pause (auto framing)", |b| {
        b.iter(|| {
            out.clear();
            session.receive(Input::Bytes(black_box(b"Michael")), &mut out);
            session.receive(Input::Pause, &mut out);
            black_box(out.len())
        })
    });

    let mut session = greeted_server(Framing::Line);
    group.bench_function("a name split over two reads", |b| {
        b.iter(|| {
            out.clear();
            session.receive(Input::Bytes(black_box(b"Mich")), &mut out);
            session.receive(Input::Bytes(black_box(b"ael\n")), &mut out);
            black_box(out.len())
        })
    });

    let pipelined = b"Michael\n".repeat(100);
    let mut session = greeted_server(Framing::Line);
    let mut big_out = Vec::with_capacity(8 * 1024);
    group.throughput(Throughput::Elements(100));
    group.bench_function("100 pipelined names in one read", |b| {
        b.iter(|| {
            big_out.clear();
            session.receive(Input::Bytes(black_box(&pipelined)), &mut big_out);
            black_box(big_out.len())
        })
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("accept: new session and greeting", |b| {
        b.iter(|| {
            let mut session = ServerSession::new(SessionLimits::default());
            out.clear();
            session.greet(&mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn client_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(1));
    let mut client = ClientSession::new(NameTerminator::Newline);
    client
        .receive(b"Server: Welcome!\nServer: What's your name?")
        .expect("the greeting matches");
    let mut outgoing = Vec::with_capacity(64);
    group.bench_function("send a name and check its reply", |b| {
        b.iter(|| {
            outgoing.clear();
            client
                .send_name(black_box(b"Michael"), &mut outgoing)
                .expect("ready");
            black_box(
                client
                    .receive(black_box(
                        b"Server: Hello Michael!\nServer: What's your name?",
                    ))
                    .expect("the reply matches"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, server_core, client_core);
criterion_main!(benches);
