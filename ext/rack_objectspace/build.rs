//! Records the Ruby version this extension is built for (the `RUBY` that
//! rb-sys reads, else `ruby` on PATH), so that `Init_rack_objectspace` can
//! refuse, with both versions named, to run on another Ruby: its headers'
//! inline functions read object layouts that change between versions.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RUBY");
    let ruby = std::env::var("RUBY").unwrap_or_else(|_| "ruby".into());
    let version = ruby_prints(&ruby, "print RUBY_VERSION");
    println!("cargo:rustc-env=RACK_OBJECTSPACE_BUILT_FOR={version}");
    // Ruby 3.3 replaced rb_postponed_job_register_one (deprecated there) with
    // a handle registered once and triggered from the hook.
    println!("cargo:rustc-check-cfg=cfg(ruby_postponed_job_handle)");
    let mut parts = version.split('.').filter_map(|p| p.parse::<u32>().ok());
    let minor = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if minor >= (3, 3) {
        println!("cargo:rustc-cfg=ruby_postponed_job_handle");
    }
    // How the sampled census learns which objects a GC frees (src/windows.rs):
    // Ruby 3.3 and 3.4 take the slow allocation path only for NEWOBJ hooks,
    // so a GC hook between windows is free, and each exports a way to read
    // the GC's verdict on an object (3.3 its mark bit at the end of marking,
    // 3.4 whether it is garbage once sweeping begins). Other Rubies: ids.
    println!("cargo:rustc-check-cfg=cfg(ruby_gc_verdict, values(\"marked\", \"garbage\"))");
    match minor {
        (3, 3) => println!("cargo:rustc-cfg=ruby_gc_verdict=\"marked\""),
        (3, 4) => println!("cargo:rustc-cfg=ruby_gc_verdict=\"garbage\""),
        _ => {}
    }
    // The bytes of a heap page, as this Ruby says (GC::INTERNAL_CONSTANTS;
    // 0 if it does not): 3.3 and 3.4 align each page to its size, so the
    // 3.4 verdict asks Ruby whether a page is still a heap page once for
    // all the recorded objects on it (src/windows.rs).
    let page_bytes = ruby_prints(&ruby, "print GC::INTERNAL_CONSTANTS[:HEAP_PAGE_SIZE].to_i")
        .trim()
        .parse::<u64>()
        .unwrap_or(0);
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(format!("{out}/heap_page_bytes.rs"), format!("{page_bytes}"))
        .expect("OUT_DIR is writable");
    // The words of a control frame (vm_core.h's rb_control_frame_t) on the
    // Rubies whose layout the allocating-line cache was checked against
    // (src/frames.rs); on any other Ruby the cache is off.
    println!("cargo:rustc-check-cfg=cfg(ruby_frame_words, values(\"7\", \"8\"))");
    match minor {
        (3, 1) => println!("cargo:rustc-cfg=ruby_frame_words=\"8\""),
        (3, 3) | (3, 4) => println!("cargo:rustc-cfg=ruby_frame_words=\"7\""),
        _ => {}
    }
}

/// What `ruby -e code` prints, or "" if it fails.
fn ruby_prints(ruby: &str, code: &str) -> String {
    Command::new(ruby)
        .args(["-e", code])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default()
}
