//! A store of many processes' census for `bench/export.rb`, written by the
//! real census writer (`Census::take_batch` over a `SiteTable`), as the
//! middleware writes it: `DIR/<host>/<pid>/census-<seq>.ndjson.gz`.
//!
//! `census_store DIR PROCESSES REQUESTS SITES`: each process boots with one
//! object at each of SITES sites, then serves REQUESTS requests: each keeps 5
//! objects at random sites in a ring that frees the oldest (counts drift at
//! many sites), leaks one string at one of 3 sites, fills a cache of 40, and
//! allocates garbage; a GC every 10 requests, a batch every 2,000. Ten hosts.

use std::collections::VecDeque;
use std::path::Path;

use objectspace_core::census::Census;
use objectspace_core::sites::SiteTable;
use parking_lot::Mutex;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, processes, requests, sites] = args.as_slice() else {
        eprintln!("usage: census_store DIR PROCESSES REQUESTS SITES");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let (processes, requests, sites): (u32, u64, u64) = (
        processes.parse().expect("PROCESSES"),
        requests.parse().expect("REQUESTS"),
        sites.parse().expect("SITES"),
    );
    let files: Vec<String> = (0..200)
        .map(|f| format!("/srv/app/releases/42/app/models/model_{f}.rb"))
        .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for p in 0..processes {
        let host = format!("web-{}", p % 10);
        let pid = 1000 + p;
        let census = Mutex::new(Census::default());
        let table = Mutex::new(SiteTable::default());
        let mut next = 0x10_0000u64;
        let mut alloc = |t: &mut SiteTable, site: u64, ty: u8| {
            let f = (site % 200) as usize;
            t.record_object(
                next,
                Some((f, files[f].as_bytes())),
                (site / 200 + 1) as u32,
                ty,
                0,
            );
            next += 40;
            next - 40
        };
        {
            let mut t = table.lock();
            for s in 0..sites {
                alloc(&mut t, s, [5u8, 7, 8, 1][(s % 4) as usize]);
            }
        }
        let mut ring: VecDeque<u64> = VecDeque::new();
        let mut garbage = Vec::new();
        let mut freed = Vec::new();
        let mut cache = 0;
        let mut gc = 0;
        for i in 1..=requests {
            {
                let (mut c, mut t) = (census.lock(), table.lock());
                let path = ["/users", "/orders", "/search"][(i % 3) as usize];
                c.begin_request(&mut t, "GET", path, gc, 1_764_400_000_000 + i * 7);
                for _ in 0..5 {
                    let s = random(sites);
                    let a = alloc(&mut t, s, 5);
                    ring.push_back(a);
                    if ring.len() > (sites as usize) / 2 {
                        freed.extend(ring.pop_front());
                    }
                }
                alloc(&mut t, sites + i % 3, 5); // the leak
                if cache < 40 {
                    alloc(&mut t, sites + 3, 8);
                    cache += 1;
                }
                for _ in 0..20 {
                    let s = random(sites);
                    garbage.push(alloc(&mut t, s, 5));
                }
                if i % 10 == 0 {
                    gc += 1;
                    for a in garbage.drain(..).chain(freed.drain(..)) {
                        t.free(a);
                    }
                    t.end_sweep(gc);
                }
            }
            if i % 2000 == 0 || i == requests {
                if let Some(b) = Census::take_batch(&census, &table, &host, pid) {
                    let path = dir.join(&b.key);
                    std::fs::create_dir_all(path.parent().expect("a key has folders"))
                        .expect("mkdir");
                    std::fs::write(path, b.gzip).expect("write");
                }
            }
        }
    }
}
