fn main() {
    println!("roomcast");
}
