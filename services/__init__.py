"""aioshop's services (users, products, orders) and the command line that runs them."""
