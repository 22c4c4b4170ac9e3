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
    if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (3, 3) {
        println!("cargo:rustc-cfg=ruby_postponed_job_handle");
    }
}
