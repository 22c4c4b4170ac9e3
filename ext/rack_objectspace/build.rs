//! Records the Ruby version this extension is built for (the `RUBY` that
//! rb-sys reads, else `ruby` on PATH), so that `Init_rack_objectspace` can
//! refuse, with both versions named, to run on another Ruby: its headers'
//! inline functions read object layouts that change between versions.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RUBY");
    let ruby = std::env::var("RUBY").unwrap_or_else(|_| "ruby".into());
    let version = Command::new(&ruby)
        .args(["-e", "print RUBY_VERSION"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
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
