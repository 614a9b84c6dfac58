//! The loopback floor of `../shared/tools/loopback-floor`, with the writer's sends made either one
//! `write` per socket (`write`) or as one io_uring submission per round (`uring`): whether
//! io_uring lowers what the kernel charges per delivery, before anyone rebuilds the hub's
//! writers on it (issue 10's io_uring lever).
//!
//! `uring-floor <sockets> <rounds> <frames per send> <write|uring>` prints the writer's and the
//! reader's CPU per delivery (from `/proc/thread-self/stat`) and the deliveries per second.

use io_uring::{opcode, types, IoUring};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Frame size, as in the shared floor (a 100-byte payload and its WebSocket header).
const FRAME: usize = 110;

/// This thread's CPU seconds so far.
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let f: Vec<&str> = s.rsplit(") ").next().unwrap_or("").split(' ').collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Sends `frame` to every socket, `rounds` times, one `write` per socket.
fn by_write(socks: &mut [TcpStream], rounds: usize, frame: &[u8]) -> std::io::Result<()> {
    for _ in 0..rounds {
        for s in socks.iter_mut() {
            s.write_all(frame)?;
        }
    }
    Ok(())
}

/// Sends `frame` to every socket, `rounds` times: each round's sends go in one submission.
fn by_uring(socks: &[TcpStream], rounds: usize, frame: &[u8]) -> std::io::Result<()> {
    let entries = socks.len().next_power_of_two() as u32;
    let mut ring = IoUring::new(entries)?;
    for _ in 0..rounds {
        for (i, s) in socks.iter().enumerate() {
            let send =
                opcode::Send::new(types::Fd(s.as_raw_fd()), frame.as_ptr(), frame.len() as u32)
                    .build()
                    .user_data(i as u64);
            // SAFETY: `frame` outlives the submission (we wait for every completion below).
            unsafe { ring.submission().push(&send) }
                .map_err(|_| std::io::Error::other("submission queue full"))?;
        }
        ring.submit_and_wait(socks.len())?;
        for cqe in ring.completion() {
            if cqe.result() != frame.len() as i32 {
                return Err(std::io::Error::other(format!(
                    "short send: {}",
                    cqe.result()
                )));
            }
        }
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|v| v.parse::<usize>().ok());
    let (Some(n), Some(rounds), Some(k), Some(mode)) = (num(0), num(1), num(2), args.get(3)) else {
        eprintln!("usage: uring-floor <sockets> <rounds> <frames per send> <write|uring>");
        std::process::exit(2);
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let c = TcpStream::connect(addr)?;
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        writers.push(s);
        readers.push(c);
    }
    let bar = Arc::new(Barrier::new(2));
    let b2 = bar.clone();
    let reader = std::thread::spawn(move || -> std::io::Result<f64> {
        let mut buf = vec![0u8; FRAME * k];
        b2.wait();
        let c0 = cpu();
        for _ in 0..rounds {
            for c in readers.iter_mut() {
                c.read_exact(&mut buf)?;
            }
        }
        Ok(cpu() - c0)
    });
    let frame = vec![b'x'; FRAME * k];
    bar.wait();
    let (c0, t0) = (cpu(), Instant::now());
    match mode.as_str() {
        "uring" => by_uring(&writers, rounds, &frame)?,
        _ => by_write(&mut writers, rounds, &frame)?,
    }
    let wcpu = cpu() - c0;
    let rcpu = reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    let d = (n * rounds * k) as f64;
    println!(
        "n={n} k={k} {mode}: writer {:.3} us, reader {:.3} us CPU per delivery; {:.0} deliveries/s",
        wcpu * 1e6 / d,
        rcpu * 1e6 / d,
        d / t0.elapsed().as_secs_f64()
    );
    Ok(())
}
