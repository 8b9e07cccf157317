//! The `dps` command line.

fn main() {
    println!("dps: the demo, provisioning, scenario and benchmark commands are coming.");
}
