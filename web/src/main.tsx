import { render } from 'preact';
import './style.css';
import { App } from './ui/App';

render(<App />, document.getElementById('app')!);
